"""Units of expensive work, and what a stored one looks like when it is read back.

An expensive stage's node returns a :class:`Work`: its :class:`Unit` s (partition key,
fingerprint of everything the result depends on, and a picklable *task* saying what to compute)
plus how to compute a group of tasks (``call``) and the engine that runs them. The catalog
dataset (:class:`tint_distill.datasets.ResumablePartitionedDataset`) keeps the units whose
fingerprint it has not finished, hands them to ``work.engine.run``, and saves each result as it
arrives. An interrupted run therefore resumes where it stopped, and a changed setting recomputes
what it affects.

Work that runs faster together (the classes of an episode share each UNet batch) has a
``group_size``: :func:`plan_groups`, one pure function used by every engine, cuts the pending
units into groups, so a resumed run groups exactly the missing units, and the local and Ray
engines compute the same groups.

A group's :class:`Call` is built on the driver from what the catalog loaded (pixels, settings,
the model's location) and run by a :class:`Worker`: this process, or a Ray worker that keeps its
model loaded (:mod:`tint_distill.execution`). A unit whose optimisation diverges
(:class:`~tint_distill.errors.NonFiniteLossError`) or fails for a reason of its own
(:class:`UnitFailed`) fails alone: the others are saved.

Reading a store back gives :class:`Stored` partitions (fingerprint, marker record, ``load()``).
:class:`Deferred` is a single model's training (the generator, the base student): the model's
dataset trains it only when its saved fingerprint differs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tint_distill.errors import NonFiniteLossError


class Worker:
    """What one process computing units keeps from one unit to the next (a loaded model) and
    reports about the unit it computes (where it ran)."""

    def __init__(self) -> None:
        self._kept: dict[Any, Any] = {}
        self.device = "cpu"  # of the unit being computed: what it said it uses (uses), else the CPU

    def keep(self, key: Any, load: Callable[[], Any]) -> Any:
        """``load()`` the first time ``key`` is asked for, the same object afterwards."""
        if key not in self._kept:
            self._kept[key] = load()
        return self._kept[key]

    def uses(self, device: Any) -> None:
        """The unit being computed runs on ``device`` (a torch device): its marker records it."""
        kind = str(getattr(device, "type", device))
        if kind.startswith("cuda"):
            import torch

            self.device = f"cuda ({torch.cuda.get_device_name(device)})"
        else:
            self.device = kind

    def where(self) -> dict[str, Any]:
        """Host, process and device of the unit just computed."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device}


class UnitFailed(RuntimeError):
    """One unit of partitioned work failed for a reason of its own: the dataset saves the other
    units and raises it at the end."""


# What makes one unit fail alone rather than stop the stage: every stage, students included.
UNIT_FAILURES = (UnitFailed, NonFiniteLossError)


def is_unit_failure(value: Any) -> bool:
    return isinstance(value, UNIT_FAILURES)


@dataclass(frozen=True)
class Call:
    """A group of tasks' computation as a picklable call, ``function(worker, *args)``, returning one
    result per task (a task's own failure, :data:`UNIT_FAILURES`, as its result). Built on the
    driver from what the catalog loaded, run wherever the engine puts it. ``function`` is a
    module-level function (workers import it by name); ``args`` hold data, settings and model
    locations. ``single``: ``function`` computes one task and returns its result."""

    function: Callable[..., Any]
    args: tuple = ()
    single: bool = False

    def run(self, worker: Worker) -> list[Any] | BaseException:
        """One result per task; a unit failure raised by the function is returned: every task fails with it."""
        worker.device = "cpu"  # until the function says otherwise (Worker.uses)
        try:
            value = self.function(worker, *self.args)
        except UNIT_FAILURES as error:
            return error
        return [value] if self.single else list(value)


@dataclass(frozen=True)
class Unit:
    """One partition's work: where it is stored (``key``), what it depends on (``fingerprint``) and
    what to compute (``task``: a small picklable description handed to its :class:`Work`'s call)."""

    key: str
    fingerprint: str
    task: Any


class Engine(Protocol):
    """Runs a stage's pending units and yields each one's :class:`Outcome` as it is known
    (:class:`tint_distill.execution.LocalEngine`, :class:`tint_distill.execution.RayEngine`)."""

    name: str

    def run(self, work: Work, units: Sequence[Unit]) -> Iterator[Outcome]: ...


@dataclass(frozen=True)
class Work:
    """What an expensive stage's node returns: its units, how to compute a group of their tasks
    (``call(tasks) -> Call``), and the engine that runs them. Units are computed ``group_size`` at
    a time; two whose tasks have equal ``apart(task)`` never share a group."""

    units: Mapping[str, Unit]
    call: Callable[[list[Any]], Call]
    engine: Engine
    group_size: int = 1
    apart: Callable[[Any], Any] | None = None
    saved: list[bool] = field(default_factory=lambda: [False], compare=False, repr=False)

    @classmethod
    def of(cls, units: Sequence[Unit], call: Callable[[list[Any]], Call], engine: Engine, **kwargs: Any) -> Work:
        return cls({unit.key: unit for unit in units}, call, engine, **kwargs)

    @classmethod
    def of_functions(cls, functions: Mapping[str, tuple[str, Callable[[], Any]]], engine: Engine | None = None) -> Work:
        """Work from plain functions, ``{key: (fingerprint, function)}``, each computing one unit (in a
        notebook, a test): run in this process unless ``engine`` says otherwise (then the functions
        must be picklable)."""
        if engine is None:
            from tint_distill.execution import LocalEngine

            engine = LocalEngine()
        units = [Unit(key, fingerprint, key) for key, (fingerprint, _) in functions.items()]
        return cls.of(units, lambda keys: Call(_call_function, (functions[keys[0]][1],), single=True), engine)

    def groups(self, units: Sequence[Unit]) -> list[list[Unit]]:
        """``units`` (the pending ones) cut into the groups they are computed in."""
        return plan_groups(units, self.group_size, (lambda unit: self.apart(unit.task)) if self.apart else None)

    def mark_saved(self) -> bool:
        """True the first time: the dataset saving this work does it (see :class:`tint_distill.hooks.NodeClock`);
        a second save of the same work is a no-op."""
        first = not self.saved[0]
        self.saved[0] = True
        return first


def _call_function(worker: Worker, function: Callable[[], Any]) -> Any:
    return function()


def plan_groups(items: Sequence[Any], group_size: int, apart: Callable[[Any], Any] | None = None) -> list[list[Any]]:
    """``items`` in groups of at most ``group_size``, in order: each group starts with the first item
    not yet placed and takes the next ones not placed whose ``apart(item)`` differs from those of
    the group (one class in two episodes: one token per group)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    apart = apart or id
    placed: set[int] = set()
    groups = []
    for first, item in enumerate(items):
        if first in placed:
            continue
        group, kinds = [item], {apart(item)}
        placed.add(first)
        for index in range(first + 1, len(items)):
            if len(group) == group_size:
                break
            other = items[index]
            if index not in placed and apart(other) not in kinds:
                group.append(other)
                kinds.add(apart(other))
                placed.add(index)
        groups.append(group)
    return groups


@dataclass
class Outcome:
    """What became of one unit: its value, or the failure it ended with (:data:`UNIT_FAILURES`);
    seconds of work (its share of its group's) and where it ran (:meth:`Worker.where`)."""

    key: str
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    where: dict = field(default_factory=dict)


def outcomes_of(units: Sequence[Unit], results: Sequence[Any] | BaseException, seconds: float,
                where: dict) -> Iterator[Outcome]:
    """The outcomes of a computed group (:meth:`Call.run`'s results): one per unit, its share of the
    group's seconds. A result that is an exception but not a unit's own failure is a bug: raised,
    as the stage must stop."""
    if is_unit_failure(results):  # the whole call failed for a reason of its own
        yield from (Outcome(unit.key, error=results, where=where) for unit in units)
        return
    if len(results) != len(units):
        raise RuntimeError(f"a call returned {len(results)} results for {len(units)} units")
    share = seconds / len(units)
    for unit, result in zip(units, results):
        if is_unit_failure(result):
            yield Outcome(unit.key, error=result, where=where)
        elif isinstance(result, BaseException):
            raise result
        else:
            yield Outcome(unit.key, result, seconds=share, where=where)


@dataclass(frozen=True)
class Stored:
    """A finished partition read back from its store: its fingerprint (what later stages chain on),
    its completion marker (``record``: seconds, host, device) and ``load()`` (also ``stored()``).
    ``sidecar()``, where its dataset has one, reads only the partition's small description (a
    specialisation's JSON), not its heavy files: for reports."""

    fingerprint: str
    load: Callable[[], Any]
    record: dict | None = field(default=None, compare=False)
    sidecar: Callable[[], Any] | None = field(default=None, compare=False)

    def __call__(self) -> Any:
        return self.load()


@dataclass(frozen=True)
class Deferred:
    """One model's training: ``compute()`` trains it; ``fingerprint`` identifies everything it
    depends on. ``force``: train even when the saved model has the same fingerprint (an explicit
    request to redo the work)."""

    fingerprint: str
    compute: Callable[[], Any]
    force: bool = False
    saved: list[bool] = field(default_factory=lambda: [False], compare=False, repr=False)

    def __call__(self) -> Any:
        return self.compute()

    mark_saved = Work.mark_saved


@dataclass(frozen=True)
class NoModel:
    """A model this run does not train (a task without images for its own generator): an optional
    model folder saving it keeps whatever it holds (Kedro refuses to save ``None``). ``why`` says why."""

    why: str
