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

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # a local Ray cluster (10-30 s a test on 2 cores), one at a time

from tint_distill.datasets import ResumablePartitionedDataset  # noqa: E402
from tint_distill.execution import (ExecutionSettings, LocalEngine, RayEngine, engine_for, parse_settings,  # noqa: E402
                                    shutdown_ray)
from tint_distill.work import Call, Unit, UnitFailed, Work, plan_groups  # noqa: E402

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
    """A group of units: each member's answer, or its own failure for a negative member."""
    return [UnitFailed(f"member {m} is negative") if m < 0 else {"member": m, "group": members} for m in members]


def _diverges(worker, key: str) -> dict:
    """A student whose loss turns NaN (``unit_2``): train_student raises this."""
    from tint_distill.errors import NonFiniteLossError

    if key == "unit_2":
        raise NonFiniteLossError("student", 4, float("nan"), epoch=1, detail="kd=nan, ce=0.9")
    return {"key": key}


def _diverges_in_a_group(worker, members: list[int]) -> list:
    """A group of classes specialised together: member 2's textual inversion diverges (as
    :func:`tint_distill.tint.specialise_group` returns it)."""
    from tint_distill.errors import NonFiniteLossError

    return [NonFiniteLossError("textual_inversion", 3, float("nan")) if m == 2 else {"member": m} for m in members]


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


def one_at_a_time(engine, n: int, function, *args) -> Work:
    """``n`` units ``unit_<i>``, each computed alone by ``function(worker, key, *args)``."""
    units = [Unit(f"unit_{i}", f"fp{i}", f"unit_{i}") for i in range(n)]
    return Work.of(units, lambda keys: Call(function, (keys[0], *args), single=True), engine)


def units(engine, log: Path, n: int = 6, pause: float = 0.3) -> Work:
    """``n`` units that note which process started them, work ``pause`` seconds and answer."""
    work = [Unit(f"unit_{i}", f"fp{i}", i) for i in range(n)]
    return Work.of(work, lambda tasks: Call(_report, (f"unit_{tasks[0]}", tasks[0], str(log), pause), single=True),
                   engine)


def members(engine, numbers, version: str, group_size: int = 2, apart=None, function=_group) -> Work:
    """One unit ``member_<m>`` per number, ``group_size`` at a time."""
    work = [Unit(f"member_{m}", f"{version}{m}", m) for m in numbers]
    return Work.of(work, lambda tasks: Call(function, (list(tasks),)), engine, group_size=group_size, apart=apart)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster of 2 CPUs for this module (the engine joins it), stopped at its end."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    shutdown_ray()


def ray_engine(**settings) -> RayEngine:
    engine = engine_for({"engine": "ray", "cpus_per_unit": 1, **settings})
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


def test_grouped_units_run_in_the_groups_the_local_engine_forms(cluster, tmp_path: Path):
    def plan(engine):
        return members(engine, (1, 2, 4, 7), "fp", group_size=2, apart=lambda m: m % 3)

    local, remote = store(tmp_path, "local"), store(tmp_path, "ray")
    local.save(plan(LocalEngine()))
    remote.save(plan(ray_engine()))
    groups = {key: value()["group"] for key, value in local.load().items()}
    assert groups == {key: value()["group"] for key, value in remote.load().items()}
    assert groups == {"member_1": [1, 2], "member_2": [1, 2], "member_4": [4], "member_7": [7]}, "4 and 7 kept apart"
    work = plan(ray_engine())
    assert [[u.task for u in g] for g in plan_groups(list(work.units.values()), 2, lambda u: u.task % 3)] == [
        [1, 2], [4], [7]], "the groups plan_groups gives"

    resumed = store(tmp_path, "resumed")
    resumed.save(members(LocalEngine(), (1, 5), "fp", group_size=2, apart=lambda m: m % 3))  # an earlier, smaller run
    resumed.save(members(ray_engine(), (1, 2, 4, 5, 7), "fp", group_size=2, apart=lambda m: m % 3))
    assert {key: value()["group"] for key, value in resumed.load().items()} == {
        "member_1": [1, 5], "member_5": [1, 5], "member_2": [2, 4], "member_4": [2, 4], "member_7": [7]}, (
        "on Ray too, a resumed run groups exactly the missing units (7 apart from 4)")

    with pytest.raises(DatasetError, match=r"1 of 3 partitions .* failed \(member_-2\).*member -2 is negative"):
        store(tmp_path, "failing").save(members(ray_engine(), (1, -2, 3), "fq"))
    assert sorted(store(tmp_path, "failing").load()) == ["member_1", "member_3"], "the others are saved"


def test_a_unit_that_fails_is_reported_and_the_others_are_saved(cluster, tmp_path: Path):
    work = one_at_a_time(ray_engine(), 5, _fails)
    with pytest.raises(DatasetError, match=r"1 of 5 partitions .* failed \(unit_3\).*unit_3 cannot be computed"):
        store(tmp_path, "out").save(work)
    assert sorted(store(tmp_path, "out").load()) == ["unit_0", "unit_1", "unit_2", "unit_4"]


def test_a_diverging_student_on_ray_fails_alone(cluster, tmp_path: Path):
    """A non-finite loss raised in a Ray worker (a student's NonFiniteLossError) fails that unit
    alone, as it does locally: the others are saved and the store names it."""
    with pytest.raises(DatasetError, match=r"1 of 4 partitions .* failed \(unit_2\).*non-finite loss") as raised:
        store(tmp_path, "out").save(one_at_a_time(ray_engine(max_workers=2), 4, _diverges))
    assert isinstance(raised.value.__cause__, UnitFailed)
    assert sorted(store(tmp_path, "out").load()) == ["unit_0", "unit_1", "unit_3"]


def test_a_diverging_class_of_a_group_on_ray_fails_alone(cluster, tmp_path: Path):
    """A class whose specialisation diverges is returned as its NonFiniteLossError among its group's
    results: on Ray, that class fails alone and its group's other classes are saved."""
    with pytest.raises(DatasetError, match=r"1 of 4 partitions .* failed \(member_2\).*textual inversion") as raised:
        store(tmp_path, "out").save(members(ray_engine(), (1, 2, 3, 4), "fd", group_size=2,
                                            function=_diverges_in_a_group))
    assert isinstance(raised.value.__cause__, UnitFailed)
    assert sorted(store(tmp_path, "out").load()) == ["member_1", "member_3", "member_4"]


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
    work = one_at_a_time(ray_engine(max_workers=2, max_retries=2), 4, _kills_its_worker, str(log))
    with pytest.raises(DatasetError, match=r"1 of 4 partitions .* failed \(unit_1\).*Ray worker died 3 times"):
        store(tmp_path, "out").save(work)
    assert sorted(store(tmp_path, "out").load()) == ["unit_0", "unit_2", "unit_3"], "the others are saved"
    starts = [p.name.split(".")[0] for p in log.iterdir()]
    assert starts.count("unit_1") == 3, "first try and max_retries=2 retries"
    assert all(starts.count(k) == 1 for k in ("unit_0", "unit_2", "unit_3")), "no other unit paid for it"


def test_settings_and_a_cluster_too_small_are_named(cluster):
    assert parse_settings(None).engine == "local" and isinstance(engine_for(None), LocalEngine)
    assert isinstance(engine_for(ExecutionSettings()), LocalEngine) and engine_for(None).name == "local"
    settings = ExecutionSettings(engine="ray", cpus_per_unit=2, stages={"inversion": {"gpus_per_unit": 0.5}})
    assert engine_for(settings).name == "ray" and engine_for(settings).settings.gpus_per_unit == 0
    inversion = engine_for(settings, "inversion")
    assert isinstance(inversion, RayEngine) and inversion.settings.gpus_per_unit == 0.5
    assert inversion.settings.cpus_per_unit == 2 and engine_for(settings, "synthesis").settings.gpus_per_unit == 0
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
