"""Scale rehearsal: the `experiment` pipeline at the test environment's sizes and tiny step counts on
the CPU for several episode counts E, to see what the driver costs per episode as E grows.

    HF_HUB_OFFLINE=1 python benchmarks/bench_scale.py --episodes 20,100,400 --output benchmarks/results/scale-cpu-2core.json

For each E, in a throw-away copy of the project (the test settings; the shipped generator and base
student as the test environment's models), `kedro run --env test --pipelines experiment` runs once
(everything computed), then once more (a no-op rerun: every partition reused). Per E it reports:

- the wall time of the `kedro` process, the time of the pipeline's nodes (MLflow ``duration_s.*``)
  and the units' own computation within them (``unit_s.*``: the engines' clock of `Call.run`);
  the **driver time** is node time less unit time (planning, reading inputs, saving, bookkeeping,
  the small nodes), reported per episode;
- the driver's peak RSS (the `kedro` process: with the local engine the units run in it too);
- files and bytes written under data/;
- the no-op rerun's wall time, per episode.

Top level: ``overhead_growth`` (driver seconds per episode at the largest E over the smallest; goal
<= 1.5), ``noop_rerun_s_per_episode`` at the largest E (goal < 0.5 s), and the driver seconds each
further episode adds between consecutive counts (fixed costs cancel there: flat if nothing grows
faster than E).
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

ROOT = Path(__file__).resolve().parents[1]
KEDRO = [sys.executable, "-m", "kedro"]

# The units' own work as small as the stages allow, so the driver's share is visible.
# The test environment's episodes (3-way 2-shot, 4 queries per class) and every method; one image per class
# for each method that distils (mined_real follows synthesis), one step of everything.
TINY = ("inversion.textual_inversion.num_steps=1", "inversion.null_text.num_steps=2", "inversion.null_text.inner_steps=1",
        "synthesis.images_per_class=1", "distillation.epochs=1", "real_unlabeled.images_per_class=1",
        "speed.n_batches=1")


def make_project(folder: Path, models: str = "data/06_models/test") -> Path:
    """A throw-away copy of the project: conf, pyproject, the embedded drawings, and the shipped
    generator and base student under ``models`` (default: as the test environment's models; nothing
    of the repository's data/ is touched)."""
    folder.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry", ".gitignore"):
        shutil.copy(ROOT / name, folder)
    shutil.copytree(ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    (folder / "src").mkdir()
    shutil.copytree(ROOT / "data" / "01_raw" / "openclipart", folder / "data" / "01_raw" / "openclipart")
    models = folder / models
    shutil.copytree(ROOT / "data" / "06_models" / "generator", models / "generator")
    shutil.copy(ROOT / "data" / "06_models" / "base_student.safetensors", models)
    return folder


def data_files(project: Path) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of every file under data/."""
    return {str(p.relative_to(project)): (s.st_size, s.st_mtime_ns)
            for p in (project / "data").rglob("*") if p.is_file() and not p.is_symlink() for s in (p.stat(),)}


def written(before: dict, after: dict) -> dict[str, int]:
    changed = [path for path, stamp in after.items() if before.get(path) != stamp]
    return {"files": len(changed), "bytes": sum(after[path][0] for path in changed)}


def kedro_run(project: Path, params: list[str], log: Path) -> dict:
    """One `kedro run`: wall seconds, peak RSS of the process (MiB), return code, partitions computed."""
    env = {**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    command = [*KEDRO, "run", "--env", "test", "--pipelines", "experiment", "--params", ",".join(params)]
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=project, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"kedro run failed (rc {process.returncode}) in {project}:\n{text[-4000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "partitions_computed": text.count("saved partition")}


def last_run_metrics(project: Path) -> dict[str, float]:
    """The MLflow metrics of the project's latest run (its local SQLite store)."""
    with sqlite3.connect(project / "mlflow.db") as db:
        run = db.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()[0]
        return {key: value for key, value in
                db.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run,))}


def times(metrics: dict[str, float]) -> dict:
    """Node seconds, the units' own seconds, the driver's (their difference), per node."""
    nodes = {k.removeprefix("duration_s."): v for k, v in metrics.items() if k.startswith("duration_s.") and k != "duration_s.total"}
    units = {k.removeprefix("unit_s."): v for k, v in metrics.items() if k.startswith("unit_s.")}
    node_s, unit_s = sum(nodes.values()), sum(units.values())
    driver = {name: round(seconds - units.get(name, 0.0), 3) for name, seconds in nodes.items()}
    return {"pipeline_s": round(metrics.get("duration_s.total", 0.0), 2), "node_s": round(node_s, 2),
            "unit_s": round(unit_s, 2), "driver_s": round(node_s - unit_s, 2),
            "driver_s_by_node": dict(sorted(driver.items(), key=lambda item: -item[1]))}


def rehearse(episodes: int, params: tuple[str, ...], folder: Path, keep: bool = False) -> dict:
    project = make_project(folder / f"E{episodes}")
    run_params = [f"data_episodes.sampling.n_episodes={episodes}", *params]
    before = data_files(project)
    first = kedro_run(project, run_params, folder / f"E{episodes}-run.log")
    first |= times(last_run_metrics(project))
    after = data_files(project)
    again = kedro_run(project, run_params, folder / f"E{episodes}-noop.log")
    again |= times(last_run_metrics(project))
    if not keep:
        shutil.rmtree(project)
    return {
        "episodes": episodes,
        "load_average_after": list(os.getloadavg()),  # other processes on the machine slow everything alike
        "run": first,
        "driver_s_per_episode": round(first["driver_s"] / episodes, 4),
        "unit_s_per_episode": round(first["unit_s"] / episodes, 4),
        "written_under_data": written(before, after),
        "noop_rerun": again,
        "noop_rerun_s_per_episode": round(again["wall_s"] / episodes, 4),
    }


def summary(rows: list[dict], params: tuple[str, ...], label: str, load: tuple, seconds: float) -> dict:
    """The report of the episode counts done so far (written after each, so a stopped bench keeps them)."""
    smallest, largest = rows[0], rows[-1]
    # Driver seconds each further episode adds, between consecutive counts: fixed costs (imports, the ONNX
    # export, loading the generator for the previews) cancel, so a cost growing faster than E shows here.
    marginal = [{"episodes": [a["episodes"], b["episodes"]],
                 "driver_s_per_episode": round((b["run"]["driver_s"] - a["run"]["driver_s"]) / (b["episodes"] - a["episodes"]), 4)}
                for a, b in zip(rows, rows[1:])]
    return {
        "overhead_growth": round(largest["driver_s_per_episode"] / smallest["driver_s_per_episode"], 3),
        "marginal_driver_s_per_episode": marginal,
        "noop_rerun_s_per_episode": largest["noop_rerun_s_per_episode"],
        "rss_growth": round(largest["run"]["peak_rss_mib"] / smallest["run"]["peak_rss_mib"], 3),
        "goals": {"overhead_growth_max": 1.5, "noop_rerun_s_per_episode_max": 0.5},
        "label": label or f"episodes {','.join(str(row['episodes']) for row in rows)}",
        "settings": {"env": "test", "pipeline": "experiment", "params": list(params), "engine": "local",
                     "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
                     "machine": platform.platform(), "load_average_at_start": load},
        "seconds": round(seconds, 1),
        "per_episode_count": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", default="20,100,400", help="comma-separated episode counts E")
    parser.add_argument("--params", default="", help="more --params for every run (after the tiny settings)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "scale-cpu-2core.json")
    parser.add_argument("--label", default="", help="what was run, and where (stored in the JSON)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the projects and logs in this folder")
    args = parser.parse_args(argv)
    counts = sorted(int(e) for e in args.episodes.split(",") if e)
    params = TINY + tuple(p for p in args.params.split(",") if p)
    started, load = time.perf_counter(), list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for episodes in counts:
            rows.append(rehearse(episodes, params, folder, keep=args.keep is not None))
            row = rows[-1]
            print(f"E={episodes:>4}: run {row['run']['wall_s']:>7.1f} s (nodes {row['run']['node_s']:.1f}, units "
                  f"{row['run']['unit_s']:.1f}); driver {row['driver_s_per_episode']:.3f} s/episode; peak RSS "
                  f"{row['run']['peak_rss_mib']:.0f} MiB; wrote {row['written_under_data']['files']} files, "
                  f"{row['written_under_data']['bytes'] / 2**20:.1f} MiB; no-op rerun {row['noop_rerun']['wall_s']:.1f} s "
                  f"({row['noop_rerun_s_per_episode']:.3f} s/episode, {row['noop_rerun']['partitions_computed']} computed)",
                  flush=True)
            report = summary(rows, params, args.label, load, time.perf_counter() - started)
            if args.output:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"overhead growth {report['overhead_growth']:.2f}x (E={rows[0]['episodes']} -> {rows[-1]['episodes']}); "
          f"no-op rerun {report['noop_rerun_s_per_episode']:.3f} s/episode; RSS growth {report['rss_growth']:.2f}x")
    return report


if __name__ == "__main__":
    main()
