"""Where the units of work run: this process (``engine: local``) or a Ray cluster (``engine: ray``).

The ``execution`` parameter block chooses (:func:`engine_for`); a node puts the engine into the
:class:`~tint_distill.work.Work` it returns, and the resumable dataset saving that work calls
``engine.run(work, pending units)`` and saves each result as the engine yields it, in whatever
order units finish. Both engines cut the units into the same groups
(:meth:`~tint_distill.work.Work.groups`) and build each group's call on the driver.

On Ray, each of ``max_workers`` actors reserves ``cpus_per_unit`` CPUs and ``gpus_per_unit`` GPUs
(fractions allowed) and computes one group at a time; a model it loads (the diffusion model, the
teacher) is kept for its next groups. Nothing assumes a shared disk: each group's inputs (pixels,
settings, specialisations, teacher logits) travel from the driver with it and its results travel
back; only model folders and weight files are read by path on the workers, so they must exist at
the same path there (a copy, or a shared mount). A worker process that dies is replaced and its
group retried (``max_retries``); a unit that still fails is reported with its partition key, and
the others are saved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tint_distill.params import ParameterError, SettingError, Settings, settings_from_params
from tint_distill.work import Call, Outcome, Unit, UnitFailed, Work, Worker, is_unit_failure, outcomes_of

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Groups sent to a worker at a time. One: a worker process that dies can take the result of the group
# it computed just before with it (Ray sends a result back after the call returns), so with a second
# group queued behind, a death could not be pinned on the group that caused it. Other workers' groups
# still overlap with the driver reading the next group's inputs.
PER_WORKER = 1
STAGES = ("inversion", "synthesis", "distillation")  # the stages whose units an engine runs
PER_STAGE = ("cpus_per_unit", "gpus_per_unit", "max_workers")  # what a stage may set differently
# Passed on to every Ray worker: nothing downloads, nothing phones home (also on joined clusters).
WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "KEDRO_DISABLE_TELEMETRY",
              "DO_NOT_TRACK")


@dataclass(frozen=True)
class ExecutionSettings(Settings):
    engine: str = "local"          # local: one unit after another in this process | ray
    address: str | None = None     # ray: null = start a cluster on this machine; auto / ray://host:port = join one
    cpus_per_unit: float = 1       # CPUs each Ray worker reserves (its torch threads: the whole part, at least 1)
    gpus_per_unit: float = 0       # GPUs each Ray worker reserves; 0.5 puts two workers on a GPU
    max_workers: int | None = None  # null: as many as the cluster's CPUs / GPUs allow
    max_retries: int = 2           # a unit whose worker dies is retried this many times
    stages: dict = field(default_factory=dict)  # {stage: {cpus_per_unit, gpus_per_unit, max_workers}} that differ

    def check(self) -> None:
        SettingError.unless_one_of("engine", self.engine, ENGINES)
        for stage, overrides in self.stages.items():
            SettingError.unless_one_of(f"stages.{stage}", stage, STAGES)
            if not isinstance(overrides, Mapping) or set(overrides) - set(PER_STAGE):
                raise SettingError(f"stages.{stage}", f"may set only {list(PER_STAGE)}, got {overrides!r}")
        if not self.cpus_per_unit > 0:
            raise SettingError("cpus_per_unit", f"must be > 0, got {self.cpus_per_unit}")
        if self.gpus_per_unit < 0:
            raise SettingError("gpus_per_unit", f"must be >= 0 (0: CPU work), got {self.gpus_per_unit}")
        if self.gpus_per_unit > 1 and self.gpus_per_unit != int(self.gpus_per_unit):
            raise SettingError("gpus_per_unit", f"above 1 must be a whole number of GPUs, got {self.gpus_per_unit}")
        if self.max_workers is not None and self.max_workers < 1:
            raise SettingError("max_workers", f"must be >= 1 or null (as many as fit), got {self.max_workers}")
        if self.max_retries < 0:
            raise SettingError("max_retries", f"must be >= 0, got {self.max_retries}")


def parse_settings(execution: dict | None, stage: str | None = None) -> ExecutionSettings:
    """The ``execution`` block as settings (errors name the parameter); with ``stage``, the
    settings that stage runs with (its ``stages`` entry applied)."""
    settings = settings_from_params(ExecutionSettings, execution or {}, "execution")
    for name, overrides in settings.stages.items():  # every stage's entry is checked, whichever runs
        settings_from_params(ExecutionSettings, {**(execution or {}), **overrides, "stages": {}},
                             f"execution.stages.{name}")
    if stage is None or stage not in settings.stages:
        return settings
    return dataclasses.replace(settings, **settings.stages[stage], stages={})


def engine_for(execution: ExecutionSettings | Mapping | None, stage: str | None = None) -> LocalEngine | RayEngine:
    """The engine the ``execution`` block asks for ``stage`` (Ray starts or is joined at its first group)."""
    plain = dataclasses.asdict(execution) if isinstance(execution, ExecutionSettings) else execution
    settings = parse_settings(plain, stage)
    return RayEngine(settings) if settings.engine == "ray" else LocalEngine()


@dataclass
class UnitClock:
    """The units' own computation (:meth:`Call.run`, on whichever worker) that this process's engines
    have seen, summed: a node's time less what this clock gained during it is the driver's (planning,
    reading inputs, saving, bookkeeping). On Ray the workers' seconds overlap, so the sum can exceed
    the node's wall time."""

    seconds: float = 0.0
    units: int = 0

    def add(self, seconds: float, units: int) -> None:
        self.seconds += seconds
        self.units += units


UNIT_CLOCK = UnitClock()  # read by the MLflow run story around each node (unit_s.<node>)


class LocalEngine:
    """Groups computed one after another in this process: the default engine."""

    name = "local"

    def __init__(self) -> None:
        self.worker = Worker()

    def run(self, work: Work, units: Sequence[Unit]) -> Iterator[Outcome]:
        for group in work.groups(units):
            started = time.perf_counter()
            try:
                call = work.call([unit.task for unit in group])  # reads the inputs
            except UnitFailed as error:  # an input of the group cannot be read, say
                results = error
            else:
                computing = time.perf_counter()
                results = call.run(self.worker)
                UNIT_CLOCK.add(time.perf_counter() - computing, len(group))
            yield from outcomes_of(group, results, time.perf_counter() - started, self.worker.where())


# "ray" once an engine of this process has connected to Ray (Ray's own state is per process too)
_STARTED_HERE: set[str] = set()


def shutdown_ray(only_if_engine_started: bool = False) -> bool:
    """Disconnect from Ray, stopping the cluster if this process started it; True if it was
    connected. ``only_if_engine_started``: leave a Ray session that an engine did not open (one the
    user opened in a notebook, say)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or (only_if_engine_started and "ray" not in _STARTED_HERE):
        return False
    ray.shutdown()
    _STARTED_HERE.discard("ray")
    return True


class UnitWorker:
    """A Ray actor: computes one unit at a time and keeps what units load (see :class:`Worker`)."""

    def __init__(self, threads: int, hide_gpus: bool) -> None:
        if hide_gpus:  # no GPU reserved: none seen (Ray leaves CUDA_VISIBLE_DEVICES alone at num_gpus=0)
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch  # after the line above: CUDA reads it once

        torch.set_num_threads(threads)
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # the units' progress, shown by the driver
        self.worker = Worker()

    def run(self, call: Call) -> tuple[Any, float, dict]:
        """The call's results (:meth:`Call.run`), seconds, where."""
        started = time.perf_counter()
        value = call.run(self.worker)
        return value, time.perf_counter() - started, self.worker.where()


class RayEngine:
    """Groups spread over Ray workers, yielded as they finish (see the module's docstring)."""

    name = "ray"

    def __init__(self, settings: ExecutionSettings) -> None:
        self.settings = settings

    # --- the cluster ----------------------------------------------------------------------------

    def _ray(self):
        import ray

        if not ray.is_initialized():
            env = {name: os.environ[name] for name in WORKER_ENV if name in os.environ}
            # null: a new cluster on this machine, never one that RAY_ADDRESS or `ray start` left around
            ray.init(address=self.settings.address or "local", include_dashboard=False,
                     logging_level=logging.WARNING, runtime_env={"env_vars": env} if env else None)
            _STARTED_HERE.add("ray")
            resources = ray.cluster_resources()
            logger.info("Ray cluster: %g CPUs, %g GPUs", resources.get("CPU", 0), resources.get("GPU", 0))
        return ray

    def workers_for(self, n_tasks: int) -> int:
        """How many workers to start: ``max_workers``, or as many as the cluster's CPUs and GPUs fit,
        never more than there are tasks."""
        resources = self._ray().cluster_resources()
        s = self.settings
        fit = int(resources.get("CPU", 0) // s.cpus_per_unit)
        if s.gpus_per_unit:
            fit = min(fit, int(round(resources.get("GPU", 0) / s.gpus_per_unit, 6)))
        if fit < 1:
            cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
            short = "cpus_per_unit" if cpus < s.cpus_per_unit else "gpus_per_unit"
            raise ParameterError(
                f"parameter 'execution.{short}' (or its execution.stages entry): no worker fits in the Ray cluster "
                f"({cpus:g} CPUs, {gpus:g} GPUs) with cpus_per_unit={s.cpus_per_unit:g}, "
                f"gpus_per_unit={s.gpus_per_unit:g}; lower it or add machines with those resources."
            )
        if s.max_workers is not None:
            if s.max_workers > fit:
                logger.warning("execution.max_workers=%d, but only %d workers fit in the Ray cluster: using %d",
                               s.max_workers, fit, fit)
            fit = min(fit, s.max_workers)
        return max(1, min(fit, n_tasks))

    def _start_worker(self):
        ray, s = self._ray(), self.settings
        # A worker that dies is replaced by a new one (outcomes); the driver counts each unit's attempts.
        actor = ray.remote(UnitWorker).options(num_cpus=s.cpus_per_unit, num_gpus=s.gpus_per_unit, max_restarts=0,
                                               max_task_retries=0)
        return actor.remote(max(1, math.floor(s.cpus_per_unit)), hide_gpus=not s.gpus_per_unit)

    # --- the work -------------------------------------------------------------------------------

    def run(self, work: Work, units: Sequence[Unit]) -> Iterator[Outcome]:
        tasks = work.groups(units)
        if not tasks:
            return
        ray = self._ray()
        from ray.exceptions import RayActorError, RayTaskError

        n_workers = self.workers_for(len(tasks))
        logger.info("Ray: %d groups (%d units) on %d workers", len(tasks), len(units), n_workers)
        workers = [self._start_worker() for _ in range(n_workers)]
        queue, free, running = deque(tasks), deque(w for _ in range(PER_WORKER) for w in workers), {}
        on_worker: dict[Any, list] = {w: [] for w in workers}  # its units' refs, oldest (computing) first
        culprit: dict[Any, Any] = {}  # a dead worker -> the ref it was computing when it died
        attempts: dict[int, int] = {}  # id(task) -> times its worker died while computing it
        fatal: BaseException | None = None
        try:
            while queue or running:
                while queue and free and fatal is None:
                    task = queue.popleft()
                    started = time.perf_counter()
                    try:
                        call = work.call([unit.task for unit in task])  # reads the inputs here, on the driver
                    except UnitFailed as error:
                        yield from (Outcome(unit.key, error=error) for unit in task)
                        continue
                    worker = free.popleft()
                    ref = worker.run.remote(call)
                    running[ref] = (task, worker, time.perf_counter() - started)
                    on_worker[worker].append(ref)
                if not running:
                    break
                (ref,), _ = ray.wait(list(running), num_returns=1)
                task, worker, reading = running.pop(ref)
                try:
                    value, seconds, where = ray.get(ref)
                except RayActorError as error:  # the worker died (killed, out of memory, a lost machine)
                    if worker not in culprit:  # its first lost unit: replace it
                        culprit[worker] = on_worker[worker][0]
                        free = deque(w for w in free if w is not worker)
                        ray.kill(worker)
                        workers.append(self._start_worker())
                        on_worker[workers[-1]] = []
                        free.extend([workers[-1]] * PER_WORKER)
                    on_worker[worker].remove(ref)
                    if culprit[worker] != ref:  # queued behind the unit that was computing: not its fault
                        queue.appendleft(task)
                        continue
                    attempts[id(task)] = attempts.get(id(task), 0) + 1
                    if attempts[id(task)] <= self.settings.max_retries:
                        logger.warning("Ray worker died while computing %s; retrying (%d of %d)",
                                       ", ".join(unit.key for unit in task),
                                       attempts[id(task)], self.settings.max_retries)
                        queue.appendleft(task)
                        continue
                    failed = UnitFailed(f"its Ray worker died {attempts[id(task)]} times "
                                        f"(execution.max_retries={self.settings.max_retries}): {error}")
                    yield from (Outcome(unit.key, error=failed) for unit in task)
                    continue
                except RayTaskError as error:  # not the unit's own failure: a bug; what is running still lands
                    on_worker[worker].remove(ref)
                    free.append(worker)
                    fatal = fatal or error.as_instanceof_cause()
                    continue
                on_worker[worker].remove(ref)
                free.append(worker)
                UNIT_CLOCK.add(seconds, len(task))
                seconds += reading  # the inputs' reading too, as the local engine counts it
                try:
                    yield from outcomes_of(task, value, seconds, where)
                except Exception as error:  # noqa: BLE001 - a bug, as the local engine would raise it
                    fatal = fatal or error
            if fatal is not None:
                raise fatal
        finally:
            for worker in workers:
                ray.kill(worker)
