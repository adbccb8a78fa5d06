"""The Ray engine on a local cluster of this machine: units spread over 2 workers, saved by the
resumable dataset as they finish, the same results as the local engine, a killed worker survived,
a failing unit reported alone, and no Ray process left behind."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
from kedro.io import DatasetError
import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a local Ray cluster: 10-30 s a test on the 2-core machine

from tint_distill.datasets import ResumablePartitionedDataset  # noqa: E402
from tint_distill.execution import RayEngine, execution_engine, parse_settings, shutdown_ray  # noqa: E402
from tint_distill.work import Call, LocalEngine, UnitFailed  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package

RAY_PROCESSES = ("raylet", "gcs_server")


def ray_processes(parent: psutil.Process | None = None) -> list[psutil.Process]:
    """Ray's own processes: all on this machine, or those under ``parent``."""
    found = []
    for process in parent.children(recursive=True) if parent else psutil.process_iter():
        try:
            text = " ".join([process.name(), *process.cmdline()])
        except psutil.Error:  # gone meanwhile
            continue
        if any(name in text for name in RAY_PROCESSES):
            found.append(process)
    return found


def store(tmp_path: Path, name: str) -> ResumablePartitionedDataset:
    return ResumablePartitionedDataset(path=str(tmp_path / name), dataset="json.JSONDataset", filename_suffix=".json")


def _report(worker, key: str, value: int, log: str, pause: float) -> dict:
    """A unit: notes which process started it (a file per start), works a while, answers."""
    Path(log, f"{key}.{os.getpid()}.{time.monotonic_ns()}").touch()
    time.sleep(pause)
    return {"key": key, "square": value * value, "pid": os.getpid()}


def _group(worker, members: list[int]) -> list:
    """A pooled unit: each member's answer, or its own failure for a negative member."""
    return [UnitFailed(f"member {m} is negative") if m < 0 else {"member": m, "group": members} for m in members]


def _kills_its_worker(worker, key: str, log: str) -> dict:
    """A unit that kills the process computing it, every time (as a segfault or the OOM killer would)."""
    Path(log, f"{key}.{os.getpid()}.{time.monotonic_ns()}").touch()
    if key == "unit_1":
        os._exit(1)
    return {"key": key}


def _fails(worker, key: str) -> dict:
    if key.endswith("3"):
        raise UnitFailed(f"{key} cannot be computed")
    return {"key": key}


def units(engine, log: Path, n: int = 6, pause: float = 0.3) -> dict:
    return {f"unit_{i}": engine.unit(f"fp{i}", lambda i=i: Call(_report, (f"unit_{i}", i, str(log), pause)))
            for i in range(n)}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster of 2 CPUs for this module (the engine joins it), stopped at its end."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    shutdown_ray()


def ray_engine(**settings) -> RayEngine:
    engine = execution_engine({"engine": "ray", "cpus_per_unit": 1, **settings})
    assert isinstance(engine, RayEngine)
    return engine


def test_units_spread_over_two_workers_are_saved_as_locally(cluster, tmp_path: Path):
    (tmp_path / "log").mkdir()
    remote = store(tmp_path, "ray")
    remote.save(units(ray_engine(max_workers=2), tmp_path / "log"))
    local = store(tmp_path, "local")
    local.save(units(LocalEngine(), tmp_path / "log"))

    loaded_remote, loaded_local = remote.load(), local.load()
    assert sorted(loaded_remote) == sorted(loaded_local) == [f"unit_{i}" for i in range(6)]
    for key in loaded_local:
        here, there = loaded_local[key](), loaded_remote[key]()
        assert (here["key"], here["square"]) == (there["key"], there["square"])
        assert here["pid"] == os.getpid() != there["pid"]
    assert len({loaded_remote[k]()["pid"] for k in loaded_remote}) == 2, "both workers did work"
    records = [loaded_remote[k].record for k in loaded_remote]
    assert all(r["device"] == "cpu" and r["host"] and r["seconds"] >= 0.3 for r in records)
    assert {r["pid"] for r in records} == {loaded_remote[k]()["pid"] for k in loaded_remote}

    again = store(tmp_path, "ray")
    before = len(list((tmp_path / "log").iterdir()))
    again.save(units(ray_engine(max_workers=2), tmp_path / "log"))
    assert len(list((tmp_path / "log").iterdir())) == before, "finished units are reused, not recomputed"


def test_pooled_units_run_in_the_groups_the_local_engine_forms(cluster, tmp_path: Path):
    def plan(engine):
        pool = engine.pool(lambda members: Call(_group, (members,)), group_size=2, apart=lambda m: m % 3)
        return {f"member_{m}": pool.deferred(m, f"fp{m}") for m in (1, 2, 4, 7)}

    local, remote = store(tmp_path, "local"), store(tmp_path, "ray")
    local.save(plan(LocalEngine()))
    remote.save(plan(ray_engine()))
    groups = {key: value()["group"] for key, value in local.load().items()}
    assert groups == {key: value()["group"] for key, value in remote.load().items()}
    assert groups == {"member_1": [1, 2], "member_2": [1, 2], "member_4": [4], "member_7": [7]}, "4 and 7 kept apart"

    def plan_with_a_failure(engine):
        pool = engine.pool(lambda members: Call(_group, (members,)), group_size=2)
        return {f"member_{m}": pool.deferred(m, f"fq{m}") for m in (1, -2, 3)}

    with pytest.raises(DatasetError, match=r"1 of 3 partitions .* failed \(member_-2\).*member -2 is negative"):
        store(tmp_path, "failing").save(plan_with_a_failure(ray_engine()))
    assert sorted(store(tmp_path, "failing").load()) == ["member_1", "member_3"], "the others are saved"


def test_a_unit_that_fails_is_reported_and_the_others_are_saved(cluster, tmp_path: Path):
    work = {f"unit_{i}": ray_engine().unit(f"fp{i}", lambda i=i: Call(_fails, (f"unit_{i}",))) for i in range(5)}
    with pytest.raises(DatasetError, match=r"1 of 5 partitions .* failed \(unit_3\).*unit_3 cannot be computed"):
        store(tmp_path, "out").save(work)
    assert sorted(store(tmp_path, "out").load()) == ["unit_0", "unit_1", "unit_2", "unit_4"]


def test_a_worker_killed_in_the_middle_of_a_unit_is_survived(cluster, tmp_path: Path):
    log = tmp_path / "log"
    log.mkdir()
    killed: list[str] = []

    def kill_the_first_worker_that_starts():
        deadline = time.time() + 120
        while time.time() < deadline:
            started = sorted(log.iterdir())
            if started:
                key, pid, _ = started[0].name.split(".")
                os.kill(int(pid), signal.SIGKILL)  # in the middle of its 2-second unit
                killed.append(key)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_worker_that_starts)
    killer.start()
    dataset = store(tmp_path, "out")
    dataset.save(units(ray_engine(max_workers=2, max_retries=1), log, n=4, pause=2.0))
    killer.join()
    assert killed, "a worker was killed"
    results = dataset.load()
    assert sorted(results) == [f"unit_{i}" for i in range(4)], "the run completed"
    starts = [p.name.split(".")[0] for p in log.iterdir()]
    assert starts.count(killed[0]) == 2, "the killed unit was retried once"
    assert all(starts.count(k) == 1 for k in results if k != killed[0]), "nothing finished was recomputed"


def test_a_unit_that_keeps_killing_its_worker_is_retried_then_reported_alone(cluster, tmp_path: Path):
    log = tmp_path / "log"
    log.mkdir()
    work = {f"unit_{i}": ray_engine(max_workers=2, max_retries=2).unit(
        f"fp{i}", lambda i=i: Call(_kills_its_worker, (f"unit_{i}", str(log)))) for i in range(4)}
    with pytest.raises(DatasetError, match=r"1 of 4 partitions .* failed \(unit_1\).*Ray worker died 3 times"):
        store(tmp_path, "out").save(work)
    assert sorted(store(tmp_path, "out").load()) == ["unit_0", "unit_2", "unit_3"], "the others are saved"
    starts = [p.name.split(".")[0] for p in log.iterdir()]
    assert starts.count("unit_1") == 3, "first try and max_retries=2 retries"
    assert all(starts.count(k) == 1 for k in ("unit_0", "unit_2", "unit_3")), "no other unit paid for it"


def test_settings_and_a_cluster_too_small_are_named(cluster):
    assert parse_settings(None).engine == "local" and isinstance(execution_engine(None), LocalEngine)
    from tint_distill.params import ParameterError

    message = r"'execution.gpus_per_unit' \(or its execution.stages entry\): no worker fits .* 0 GPUs"
    with pytest.raises(ParameterError, match=message):
        ray_engine(gpus_per_unit=1).workers_for(3)
    assert ray_engine(max_workers=8).workers_for(3) == 2, "no more workers than the 2 CPUs fit"
    assert ray_engine(cpus_per_unit=0.5).workers_for(3) == 3, "fractional CPUs: more workers, never more than tasks"


def test_shutdown_leaves_no_ray_process(tmp_path: Path):
    """Last in this module: the module's cluster is gone; an engine that starts its own stops it."""
    shutdown_ray()
    this = psutil.Process()
    store(tmp_path, "out").save(units(ray_engine(), tmp_path, n=2, pause=0.0))
    assert ray_processes(this), "the engine started a local cluster"
    assert shutdown_ray(only_if_engine_started=True), "the hook's call: the engine started it"
    deadline = time.time() + 20
    while ray_processes(this) and time.time() < deadline:
        time.sleep(0.2)
    assert not ray_processes(this), "no Ray process is left behind"
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")  # a session the user opened
    assert not shutdown_ray(only_if_engine_started=True) and ray.is_initialized(), "left to its owner"
    shutdown_ray()
