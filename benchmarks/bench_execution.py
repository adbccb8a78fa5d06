"""Throughput of the student stage on the local engine and on Ray with 1 and 2 workers.

Run from the repository root (``make bench``)::

    HF_HUB_OFFLINE=1 python benchmarks/bench_execution.py --output data/08_reporting/benchmark_execution.json

The real student stage (``train_students``, each result saved by the resumable dataset) on real
episodes of the embedded drawings (5-way 5-shot, methods ``supports_only`` and
``real_unlabeled``), the teacher's logits computed once beforehand. Each configuration starts
from an empty output folder, so every student is trained; every worker (and the local engine)
uses one torch thread. The configurations alternate, best of ``--repeats`` rounds each. The Ray
cluster is started once, before the timed runs (its start is reported apart); each timed Ray run
includes starting its workers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import ray  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from tint_distill.data.episodes import EpisodeSpec, assign_class_splits, sample_episodes  # noqa: E402
from tint_distill.data.sources import image_folder  # noqa: E402
from tint_distill.datasets import ResumablePartitionedDataset  # noqa: E402
from tint_distill.distill.distillation import DistillationConfig  # noqa: E402
from tint_distill.distill.student import StudentSettings  # noqa: E402
from tint_distill.distill.teacher import TeacherSettings  # noqa: E402
from tint_distill.execution import ExecutionSettings, parse_settings, shutdown_ray  # noqa: E402
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings  # noqa: E402
from tint_distill.pipelines.distillation.nodes import label_with_teacher, mine_real_images, train_students  # noqa: E402
from tint_distill.work import Stored  # noqa: E402

DRAWINGS = ROOT / "data" / "01_raw" / "openclipart"
METHODS = ["supports_only", "real_unlabeled"]  # 20 episodes: 40 students, as in the default run
CONFIGURATIONS = {"local": {"engine": "local"}, "ray_1_worker": {"engine": "ray", "max_workers": 1},
                  "ray_2_workers": {"engine": "ray", "max_workers": 2}}


def _constant(value):
    return value


def student_stage(n_episodes: int, epochs: int):
    """``run(execution, folder) -> results``: the student stage of ``n_episodes`` episodes."""
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_data_episodes.yml").read_text())["data_episodes"]
    images = image_folder(DRAWINGS)
    index = assign_class_splits(images.index, params["class_splits"])
    episodes = sample_episodes(index, EpisodeSpec(n_way=5, n_shot=5, n_query=15, n_episodes=n_episodes, seed=0))
    real = RealUnlabeledSettings(images_per_class=20, seed=0)
    teacher_settings = TeacherSettings(batch_size=32)
    mined = mine_real_images(images, index, episodes, {}, teacher_settings, METHODS, MinedRealSettings(), 20)  # none
    labels = label_with_teacher(images, episodes, index, {}, teacher_settings, METHODS, real, mined,
                                ExecutionSettings())
    teacher = {}
    for outcome in labels.engine.run(labels, list(labels.units.values())):  # once, kept in memory for every run
        if outcome.error is not None:
            raise outcome.error
        fingerprint = labels.units[outcome.key].fingerprint
        teacher[outcome.key] = Stored(fingerprint, functools.partial(_constant, outcome.value))
    distillation = DistillationConfig(epochs=epochs, batch_size=64, image_size=32)
    student = StudentSettings(init="scratch")

    def run(execution: dict, folder: Path) -> dict:
        work = train_students(images, episodes, index, {}, teacher, METHODS, student, distillation, real, mined,
                              None, parse_settings(execution))
        store = ResumablePartitionedDataset(path=str(folder), dataset="json.JSONDataset", filename_suffix=".json")
        store.save(work)
        return {key: unit()["accuracy"] for key, unit in store.load().items()}

    return run, n_episodes * len(METHODS)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "08_reporting" / "benchmark_execution.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as each Ray worker (cpus_per_unit: 1)

    run, n_students = student_stage(args.episodes, args.epochs)
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    cluster_start = time.perf_counter() - started
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    accuracies = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for repeat in range(args.repeats):
                for name, execution in CONFIGURATIONS.items():
                    started = time.perf_counter()
                    accuracies[name, repeat] = run(execution, Path(scratch) / f"{name}_{repeat}")
                    seconds[name].append(time.perf_counter() - started)
                    print(f"{name}: {seconds[name][-1]:.1f} s for {n_students} students", flush=True)
    finally:
        shutdown_ray()
    best = {name: min(values) for name, values in seconds.items()}
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "ray": ray.__version__, "torch_threads_per_unit": 1},
        "workload": {"stage": "students", "episodes": args.episodes, "methods": METHODS, "students": n_students,
                     "epochs": args.epochs, "n_way": 5, "n_shot": 5, "repeats": args.repeats},
        "ray_cluster_start_s": round(cluster_start, 2),
        "seconds": {name: [round(v, 2) for v in values] for name, values in seconds.items()},
        "best_seconds": {name: round(v, 2) for name, v in best.items()},
        "students_per_s": {name: round(n_students / v, 3) for name, v in best.items()},
        "speedup_2_workers_vs_1": round(best["ray_1_worker"] / best["ray_2_workers"], 2),
        "ray_1_worker_overhead_vs_local": round(best["ray_1_worker"] / best["local"] - 1, 3),
        "same_accuracies": all(value == accuracies["local", 0] for value in accuracies.values()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("best_seconds", "speedup_2_workers_vs_1", "ray_1_worker_overhead_vs_local",
                                             "same_accuracies")}, indent=1))
    return result


if __name__ == "__main__":
    main()
