"""What the task's k-fold estimate costs: a whole task run against one specialisation-and-synthesis
pass of the same classes (issue 24's target: within 3x).

Each measurement runs in its own throw-away copy of the project (offline default settings, the
shipped generator and base student; nothing cached between them, nothing of the repository's
data/ touched), one after the other:

- ``pass``: ``--to-nodes task.synthesis.generate_synthetic_images`` with ``task.folds=0``: the
  final model's specialisations and synthetic images only;
- ``final_only``: the whole task run with ``task.folds=0`` (+ teacher, students, baselines, export);
- ``task``: the whole task run with the default folds.

The domain generator is off in all three (``task.domain_generator.pretrain=false``: it is trained
once per folder and reused, and would hide the ratio); its own cost is in
bench_domain_generator.py. Per run: wall seconds, the pipeline's own seconds and the seconds per
stage (MLflow ``duration_s.*``).

    python benchmarks/bench_task_cost.py --source fashion-mnist --output benchmarks/results/task-cost-cpu-2core.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_scale import make_project as copy_project

ROOT = Path(__file__).resolve().parents[1]
KEDRO = [sys.executable, "-m", "kedro"]


def make_project(folder: Path, source: str) -> Path:
    """A throw-away copy of the project (bench_scale's) with the shipped models where the default
    settings read them, and a task folder built by ``kedro example-task --source <source>``."""
    copy_project(folder, models="data/06_models")
    subprocess.run([*KEDRO, "example-task", "--source", source, "--out", "data/01_raw/task", "--predict", "0"],
                   cwd=folder, check=True, env=environment(), capture_output=True)
    return folder


def environment() -> dict:
    return {**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


def run(project: Path, params: list[str], extra: list[str], log: Path) -> dict:
    """One `kedro run --pipelines task`: wall seconds and the MLflow durations of its run."""
    command = [*KEDRO, "run", "--pipelines", "task", "--params", ",".join(params), *extra]
    started = time.perf_counter()
    with log.open("w") as out:
        status = subprocess.run(command, cwd=project, stdout=out, stderr=subprocess.STDOUT, env=environment())
    wall = time.perf_counter() - started
    if status.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {project}:\n{log.read_text(errors='replace')[-4000:]}")
    with sqlite3.connect(project / "mlflow.db") as db:
        run_id = db.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()[0]
        metrics = dict(db.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)))
    stages: dict[str, float] = {}
    for key, seconds in metrics.items():
        if key.startswith("duration_s.") and key != "duration_s.total":
            stage = key.removeprefix("duration_s.").split(".")[1] if key.count(".") >= 3 else key
            stages[stage] = round(stages.get(stage, 0.0) + seconds, 2)
    return {"wall_s": round(wall, 2), "pipeline_s": round(metrics.get("duration_s.total", 0.0), 2),
            "stages_s": dict(sorted(stages.items(), key=lambda item: -item[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="drawings", choices=["drawings", "fashion-mnist"])
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "08_reporting" / "benchmark_task_cost.json")
    parser.add_argument("--keep", action="store_true", help="Keep the throw-away projects (their paths are printed).")
    args = parser.parse_args()

    base = ["task_path=data/01_raw/task", "task.domain_generator.pretrain=false"]
    plans = {"pass": (base + ["task.folds=0"], ["--to-nodes", "task.synthesis.generate_synthetic_images"]),
             "final_only": (base + ["task.folds=0"], []),
             "task": (base, [])}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_task_cost_") as scratch:
        for name, (params, extra) in plans.items():
            project = make_project(Path(scratch) / name, args.source)
            results[name] = run(project, params, extra, Path(scratch) / f"{name}.log")
            print(f"{name}: {results[name]['wall_s']} s wall, pipeline {results[name]['pipeline_s']} s", flush=True)
            if args.keep:
                kept = Path(tempfile.mkdtemp(prefix=f"bench_task_cost_{name}_"))
                shutil.copytree(project, kept, dirs_exist_ok=True)
                print(f"  kept in {kept}")
    ratio = {name: round(results[name]["wall_s"] / results["pass"]["wall_s"], 2) for name in ("final_only", "task")}
    report = {"what": "task run vs one specialisation-and-synthesis pass (issue 24: within 3x)",
              "source": args.source, "results": results, "ratio_to_pass_wall": ratio,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch_threads": os.environ.get("OMP_NUM_THREADS", "default")},
              "date": time.strftime("%Y-%m-%d")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratio_to_pass_wall": ratio}, indent=2))


if __name__ == "__main__":
    main()
