"""Reliability scenarios replayed through `kedro` as a user and an operator would: kill -9 at
random moments of each stage and of the task, a file deleted, truncated or changed inside finished
work, prune after an aborted run, the run lock's file deleted mid-run, a damaged MLflow store, a
full disk, bad images, a crafted CIFAR pickle, and the test and benchmark environments beside the
shipped models. Each scenario says what must hold and whether it did; the table goes to stdout and
the JSON to --output.

    HF_HUB_OFFLINE=1 python benchmarks/bench_reliability.py --output data/08_reporting/benchmark_reliability.json

Runs on a throw-away copy of the project (the test environment's small settings, the shipped
generator), about 10 minutes on 2 cores. `--only` picks scenarios by name.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEDRO = [sys.executable, "-m", "kedro"]
STORES = {
    "inversion": Path("data/06_models/class_specialisations"),
    "synthesis": Path("data/05_model_input/synthetic_images"),
    "distillation": Path("data/07_model_output/student_results"),
    "teacher": Path("data/07_model_output/teacher_outputs"),
}


class Project:
    """A throw-away copy of the project to run `kedro` in (as the test suite's fixture)."""

    def __init__(self, folder: Path):
        self.path = folder
        folder.mkdir(parents=True)
        shutil.copy(ROOT / "pyproject.toml", folder)
        shutil.copy(ROOT / ".telemetry", folder)
        shutil.copy(ROOT / ".gitignore", folder)
        shutil.copytree(ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
        (folder / "conf" / "local").mkdir()
        (folder / "src").mkdir()
        shutil.copytree(ROOT / "data" / "01_raw" / "openclipart", folder / "data" / "01_raw" / "openclipart")
        for target in ("data/06_models", "data/06_models/test"):  # the shipped models, and the test env's copy
            shutil.copytree(ROOT / "data" / "06_models" / "generator", folder / target / "generator")
            shutil.copy(ROOT / "data" / "06_models" / "base_student.safetensors", folder / target)

    def kedro(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
        return subprocess.run([*KEDRO, *args], cwd=self.path, capture_output=True, text=True, timeout=timeout, env=env)

    def start(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
        return subprocess.Popen([*KEDRO, *args], cwd=self.path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def markers(self, store: Path) -> list[Path]:
        folder = self.path / store
        return sorted(folder.rglob("*.done")) if folder.exists() else []

    def kill_when(self, process: subprocess.Popen, ready: Callable[[], bool], delay: float, limit: float = 600) -> bool:
        """SIGKILL the run's whole process group once ``ready()`` (then ``delay`` s more); False if it
        finished first."""
        deadline = time.time() + limit
        while not ready() and process.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(delay)
        finished = process.poll() is not None
        if not finished:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return not finished


def log_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def experiment(project: Project, *params: str) -> list[str]:
    return ["run", "--env", "test", "--pipelines", "experiment"] + (["--params", ",".join(params)] if params else [])


# --- the scenarios: each returns (held, what was seen) ---------------------------------------------


def shipped_models_untouched(project: Project, rng: random.Random) -> tuple[bool, str]:
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *command], cwd=project.path, check=True, capture_output=True)
    run = project.kedro("run", "--env", "test", "--pipelines", "generator_pretraining,student_pretraining")
    status = subprocess.run(["git", "status", "--porcelain", "data/06_models"], cwd=project.path, capture_output=True,
                            text=True).stdout.split()
    kept = sorted(p.name for p in (project.path / "data/06_models/test").glob("*previous-*"))
    return run.returncode == 0 and not status, f"git status of data/06_models: {status or 'clean'}; kept: {kept}"


def in_use(project: Project, store: Path) -> list[Path]:
    """The finished partition versions the last run that saved ``store`` uses (its markers)."""
    folder = project.path / store
    current = folder / "_current.json"
    partitions = json.loads(current.read_text())["partitions"] if current.exists() else {}
    return [m for key, version in partitions.items() if (m := folder / key / f"{version}.done").exists()]


def kill_during(stage: str, seed: int) -> Callable[[Project, random.Random], tuple[bool, str]]:
    """Other episodes (``seed``) than any run before, killed after the stage's first new partition."""

    def scenario(project: Project, rng: random.Random) -> tuple[bool, str]:
        store = STORES[stage]
        run = experiment(project, f"data_episodes.sampling.seed={seed}")
        before = len(project.markers(store))
        delay = rng.uniform(0, 1.5)
        killed = project.kill_when(project.start(*run), lambda: len(project.markers(store)) > before, delay)
        at_kill = len(project.markers(store)) - before
        rerun = project.kedro(*run)
        verify = project.kedro("verify", "--env", "test")
        computed = log_of(rerun).count("saved partition")
        return (killed and rerun.returncode == 0 and verify.returncode == 0,
                f"killed {delay:.2f} s after the first new {stage} partition ({at_kill} finished then); the rerun "
                f"resumed (rc {rerun.returncode}, {computed} partitions computed); verify rc {verify.returncode}")

    return scenario


def deleted_png_recomputed(project: Project, rng: random.Random) -> tuple[bool, str]:
    assert project.kedro(*experiment(project)).returncode == 0
    victim = rng.choice(sorted(rng.choice(in_use(project, STORES["synthesis"])).with_suffix("").glob("*.*")))
    victim.unlink()
    rerun = project.kedro(*experiment(project))
    log = log_of(rerun)
    students = log.count("student_results: saved partition")
    return (rerun.returncode == 0 and victim.is_file() and "is damaged (missing: " in log and students == 0,
            f"deleted {victim.relative_to(project.path)}; rerun: warned and recomputed it: "
            f"{'is damaged (missing' in log}, back: {victim.is_file()}, students retrained: {students} "
            "(the same images again: the finished students stay valid)")


def truncated_safetensors_refused_then_recomputed(project: Project, rng: random.Random) -> tuple[bool, str]:
    victim = next(rng.choice(in_use(project, STORES["teacher"])).with_suffix("").glob("*.safetensors"))
    with victim.open("r+b") as handle:
        handle.truncate(victim.stat().st_size // 2)
    alone = project.kedro("run", "--env", "test", "--pipelines", "evaluation")
    message = log_of(alone)
    rerun = project.kedro(*experiment(project))
    return (alone.returncode != 0 and "of another size" in message and "kedro run" in message
            and rerun.returncode == 0 and "is damaged" in log_of(rerun),
            f"truncated {victim.name}: evaluation alone refused it naming the partition and the fix: "
            f"{'of another size' in message}; a full run recomputed it: rc {rerun.returncode}")


def changed_bytes_found_by_verify(project: Project, rng: random.Random) -> tuple[bool, str]:
    victim = rng.choice(sorted(rng.choice(in_use(project, STORES["synthesis"])).with_suffix("").glob("*.*")))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    found = project.kedro("verify", "--env", "test")
    repaired = project.kedro("verify", "--env", "test", "--repair")
    rerun = project.kedro(*experiment(project))
    clean = project.kedro("verify", "--env", "test")
    return (found.returncode != 0 and "changed: " in log_of(found) and repaired.returncode != 0
            and rerun.returncode == 0 and clean.returncode == 0,
            f"one byte of {victim.name} flipped: verify rc {found.returncode} ('changed' named: "
            f"{'changed: ' in log_of(found)}); after --repair and a run, verify rc {clean.returncode}")


def prune_after_aborted_run(project: Project, rng: random.Random) -> tuple[bool, str]:
    assert project.kedro(*experiment(project)).returncode == 0
    complete = {p.relative_to(project.path).as_posix() for store in STORES.values() for p in in_use(project, store)}
    before = len(project.markers(STORES["distillation"]))  # killed in the last stage: the earlier ones finished
    process = project.start(*experiment(project, "data_episodes.sampling.seed=8"))
    project.kill_when(process, lambda: len(project.markers(STORES["distillation"])) > before, rng.uniform(0, 1))
    pruned = project.kedro("prune", "--env", "test", "--yes")
    left = {p.relative_to(project.path).as_posix() for store in STORES.values() for p in project.markers(store)}
    back = project.kedro(*experiment(project))
    return (pruned.returncode == 0 and complete <= left and "saved partition" not in log_of(back),
            f"{len(complete - left)} of the {len(complete)} finished partitions of the last complete run removed; "
            f"going back computed {log_of(back).count('saved partition')} partitions")


def prune_without_current_file(project: Project, rng: random.Random) -> tuple[bool, str]:
    current = project.path / STORES["synthesis"] / "_current.json"
    moved = current.with_name("_current.json.bench")
    current.rename(moved)
    before = len(project.markers(STORES["synthesis"]))
    pruned = project.kedro("prune", "--env", "test", "--yes")
    after = len(project.markers(STORES["synthesis"]))
    moved.rename(current)
    return (before == after and "removes nothing" in log_of(pruned),
            f"_current.json missing: {before - after} partitions removed; said 'removes nothing': "
            f"{'removes nothing' in log_of(pruned)}")


def lock_file_deleted_mid_run(project: Project, rng: random.Random) -> tuple[bool, str]:
    first = project.start(*experiment(project, "data_episodes.sampling.seed=11"))
    note = project.path / "data" / ".run.lock"
    deadline = time.time() + 120
    while not (note.exists() and "experiment" in note.read_text(errors="ignore")) and time.time() < deadline:
        time.sleep(0.1)
    note.unlink()
    second = project.kedro("run", "--env", "test", "--pipelines", "data_episodes")
    running = first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    return (second.returncode != 0 and "another `kedro run`" in log_of(second) and running,
            f"lock file deleted while a run worked: a second run was refused: {second.returncode != 0}")


def damaged_mlflow_store(project: Project, rng: random.Random) -> tuple[bool, str]:
    store = project.path / "mlflow.db"
    backup = store.with_name("mlflow.db.bench")
    if store.exists():
        shutil.copy(store, backup)
    else:
        sqlite3.connect(store).executescript("CREATE TABLE t (a TEXT); " + "INSERT INTO t VALUES ('x');" * 2000)
    data = bytearray(store.read_bytes())
    page = 4096
    start = page * min(3, max(1, len(data) // page - 2))
    data[start:start + 2 * page] = bytes(range(256)) * (2 * page // 256)
    store.write_bytes(bytes(data))
    marker = project.path / "data" / "02_intermediate" / "image_index.csv"
    stamp = marker.stat().st_mtime_ns if marker.exists() else None
    run = project.kedro("run", "--env", "test", "--pipelines", "data_episodes")
    untouched = (marker.stat().st_mtime_ns if marker.exists() else None) == stamp
    store.unlink()
    if backup.exists():
        backup.rename(store)
    return (run.returncode != 0 and "mlflow.db is damaged" in log_of(run) and untouched,
            f"run stopped before any node, naming the file: {run.returncode != 0 and 'mlflow.db is damaged' in log_of(run)}")


def disk_full(project: Project, rng: random.Random) -> tuple[bool | None, str]:
    target = project.path / STORES["synthesis"]
    moved = target.with_name("synthetic_images.bench")
    target.rename(moved)
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        target.rmdir()
        moved.rename(target)
        return None, "skipped: no tmpfs can be mounted here"
    try:
        full = project.kedro(*experiment(project, "data_episodes.sampling.seed=21"))
        intact = project.kedro("verify", "--env", "test")
        message = log_of(full)
    finally:
        subprocess.run(["umount", str(target)], check=True)
        target.rmdir()
        moved.rename(target)
    rerun = project.kedro(*experiment(project, "data_episodes.sampling.seed=21"))
    return (full.returncode != 0 and "No space left" in message and intact.returncode == 0 and rerun.returncode == 0,
            f"64 KB disk: run failed with ENOSPC: {'No space left' in message}; no damaged partition left "
            f"(verify rc {intact.returncode}); rerun with room rc {rerun.returncode}")


def bad_images(project: Project, rng: random.Random) -> tuple[bool, str]:
    folder = project.path / "data" / "01_raw" / "openclipart" / "house"
    victim = sorted(folder.glob("*.png"))[-1]
    original = victim.read_bytes()
    victim.write_bytes(original[:200])
    run = project.kedro("run", "--env", "test", "--pipelines", "data_episodes")
    victim.write_bytes(original)
    return (run.returncode != 0 and victim.name in log_of(run) and "cannot" in log_of(run),
            f"a truncated PNG stops the run naming it: {victim.name in log_of(run)}")


def tiny_image_in_task(project: Project, rng: random.Random) -> tuple[bool, str]:
    from PIL import Image

    task = project.path / "data" / "01_raw" / "bench_task"
    made = project.kedro("example-task", "--classes", "fish,clock", "--images", "3", "--test", "0", "--predict", "0",
                         "--out", str(task))
    Image.new("RGB", (1, 1), (200, 0, 0)).save(task / "fish" / "pixel.png")
    run = project.kedro("run", "--env", "test", "--pipelines", "task", "--params", f"task_path={task}")
    message = log_of(run)
    worked = (project.path / "data" / "06_models" / "task").exists()
    return (made.returncode == 0 and run.returncode != 0 and "pixel.png (1x1 px)" in message and not worked,
            f"1x1 image: the task stopped naming it: {'pixel.png (1x1 px)' in message}; no work done: {not worked}")


def kill_during_task(project: Project, rng: random.Random) -> tuple[bool, str]:
    task = project.path / "data" / "01_raw" / "bench_task"
    (task / "fish" / "pixel.png").unlink(missing_ok=True)
    args = ["run", "--env", "test", "--pipelines", "task", "--params", f"task_path={task},task.folds=2"]
    specialisations = Path("data/06_models/task/class_specialisations")
    process = project.start(*args)
    delay = rng.uniform(0, 1.5)
    killed = project.kill_when(process, lambda: len(project.markers(specialisations)) > 0, delay)
    rerun = project.kedro(*args)
    return (killed and rerun.returncode == 0 and "Task accuracy" in log_of(rerun),
            f"killed {delay:.2f} s after the first specialisation; rerun rc {rerun.returncode}")


def crafted_cifar_pickle(project: Project, rng: random.Random) -> tuple[bool, str]:
    root = project.path / "data" / "01_raw" / "cifar_crafted"
    (root / "cifar-100-python").mkdir(parents=True)
    ran = project.path / "code_ran"
    payload = pickle.dumps({b"fine_label_names": _Runs(str(ran))})
    (root / "cifar-100-python" / "meta").write_bytes(payload)
    for name in ("train", "test"):
        (root / "cifar-100-python" / name).write_bytes(pickle.dumps({b"data": [], b"fine_labels": []}))
    split = root / "splits" / "bertinetto"
    split.mkdir(parents=True)
    for name in ("train", "val", "test"):
        (split / f"{name}.txt").write_text("a\n")
    run = project.kedro("run", "--pipelines", "data_episodes", "--params", f"data_source=cifar_fs,raw_path={root}")
    return (run.returncode != 0 and not ran.exists() and "refused" in log_of(run),
            f"crafted meta file refused naming it: {'meta' in log_of(run)}; its code ran: {ran.exists()}")


class _Runs:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


SCENARIOS: dict[str, Callable[[Project, random.Random], tuple[bool, str]]] = {
    "test_env_leaves_shipped_models": shipped_models_untouched,
    "kill_during_inversion": kill_during("inversion", seed=101),
    "kill_during_synthesis": kill_during("synthesis", seed=102),
    "kill_during_distillation": kill_during("distillation", seed=103),
    "png_deleted_from_finished_partition": deleted_png_recomputed,
    "safetensors_truncated_in_finished_partition": truncated_safetensors_refused_then_recomputed,
    "same_size_change_found_by_verify": changed_bytes_found_by_verify,
    "prune_after_killed_run_with_other_settings": prune_after_aborted_run,
    "prune_with_current_file_deleted": prune_without_current_file,
    "lock_file_deleted_mid_run": lock_file_deleted_mid_run,
    "damaged_mlflow_db": damaged_mlflow_store,
    "disk_full": disk_full,
    "corrupt_image": bad_images,
    "one_pixel_image_in_task": tiny_image_in_task,
    "kill_during_task": kill_during_task,
    "crafted_cifar_pickle": crafted_cifar_pickle,
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all, in order)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments and the files damaged")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="reliability-") as folder:
        project = Project(Path(folder) / "project")
        for name in names:
            started = time.perf_counter()
            try:
                held, seen = SCENARIOS[name](project, rng)
            except Exception as error:  # noqa: BLE001 - a scenario that breaks is a finding, reported as such
                held, seen = False, f"{type(error).__name__}: {error}"
            rows.append({"scenario": name, "held": held, "seen": seen, "seconds": round(time.perf_counter() - started, 1)})
            state = {True: "held   ", False: "FAILED ", None: "skipped"}[held]
            print(f"{state}  {name:<45} {rows[-1]['seconds']:>6.1f} s  {seen}", flush=True)
    skipped = sum(r["held"] is None for r in rows)
    report = {"scenarios": rows, "held": sum(r["held"] is True for r in rows), "skipped": skipped,
              "total": len(rows), "seed": args.seed}
    print(f"{report['held']} of {report['total']} scenarios held" + (f", {skipped} skipped" if skipped else ""))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(0 if (lambda r: r["held"] + r["skipped"] == r["total"])(main()) else 1)
