"""Units of expensive work that can be skipped when already done.

A node returns ``{partition key: Deferred(fingerprint, compute)}``; the catalog dataset
(:class:`tint_distill.datasets.ResumablePartitionedDataset`) runs ``compute`` only for keys
whose saved fingerprint differs, saving each result as soon as it exists. An interrupted
run therefore resumes where it stopped, and a changed setting recomputes what it affects.

Work that runs faster together (the classes of an episode share each UNet batch) comes from a
:class:`WorkPool`: the dataset first tells the pool which of its units still need computing,
then the first of them to be asked for computes itself with the next few needed ones in one go.
A resumed run therefore groups exactly the missing units, whatever was finished before.

Where the work runs is the *engine*'s business (``execution.engine``): a unit made by an engine
(:meth:`LocalEngine.unit`, :meth:`LocalEngine.pool`) is a :class:`Call` built on the driver from
what the catalog loaded (pixels, settings, the model's location) and run by a :class:`Worker`:
this process for :class:`LocalEngine`, or Ray workers that keep their model loaded
(:class:`tint_distill.execution.RayEngine`). Either way the dataset saves each result as it
arrives, so resuming, fingerprints and markers do not depend on the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class Call:
    """A unit's computation as a picklable call, ``function(worker, *args)``: built on the driver
    from what the catalog loaded, run wherever the engine puts it. ``function`` is a module-level
    function (workers import it by name); ``args`` hold data, settings and model locations."""

    function: Callable[..., Any]
    args: tuple = ()

    def run(self, worker: Worker) -> Any:
        worker.device = "cpu"  # until the function says otherwise (Worker.uses)
        return self.function(worker, *self.args)


@dataclass(frozen=True)
class Deferred:
    """``compute()`` produces the value; ``fingerprint`` identifies everything it depends on.

    ``force``: compute even when a saved value has the same fingerprint (an explicit request
    to redo the work; the fingerprint saved afterwards is still ``fingerprint``).
    """

    fingerprint: str
    compute: Callable[[], Any]
    force: bool = False
    pool: "WorkPool | None" = None  # the pool this unit is computed in, if any
    member: Any = None  # its name in the pool
    call: Callable[[], Call] | None = None  # builds the unit's Call: an engine may run it elsewhere
    engine: "LocalEngine | None" = None  # the engine the node chose for it
    record: dict | None = field(default=None, compare=False)  # a loaded partition: its completion marker

    def __call__(self) -> Any:
        return self.compute()

    def needed(self) -> None:
        """Called by the dataset before any work starts, for every unit it will compute."""
        if self.pool is not None:
            self.pool.need(self.member)


class UnitFailed(RuntimeError):
    """One unit of partitioned work failed for a reason of its own (a diverging optimisation, say):
    the dataset saves the other units and raises it at the end."""


class WorkPool:
    """Units computed ``group_size`` at a time by ``compute_group(members) -> [result or exception]``.

    ``deferred(member, fingerprint)`` makes the unit's :class:`Deferred`. The dataset calls
    ``need`` for the units it will compute, in order; asking for a unit computes it with the next
    needed units not yet computed, and keeps their results until they are asked for. Members with
    equal ``apart(member)`` never share a group (one class in two episodes: one token). A member's
    exception is raised when (and only when) that member is asked for.
    """

    def __init__(self, compute_group: Callable[[list[Any]], Sequence[Any]], group_size: int,
                 apart: Callable[[Any], Any] | None = None, *,
                 make_call: Callable[[list[Any]], Call] | None = None, engine: "LocalEngine | None" = None):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.compute_group, self.group_size = compute_group, group_size
        self.apart = apart or (lambda member: member)
        self.make_call, self.engine = make_call, engine  # how an engine runs a group elsewhere
        self._needed: dict[Any, None] = {}  # in the order the dataset will ask for them
        self._ready: dict[Any, Any] = {}
        self._started: set[Any] = set()
        self._seconds: dict[Any, float] = {}

    def deferred(self, member: Any, fingerprint: str) -> Deferred:
        return Deferred(fingerprint, lambda: self.result(member), pool=self, member=member, engine=self.engine)

    def need(self, member: Any) -> None:
        self._needed.setdefault(member, None)

    def _group_from(self, member: Any, started: set[Any]) -> list[Any]:
        """``member`` and the next needed members not in ``started``, never two alike (``apart``)."""
        group, kinds = [member], {self.apart(member)}
        for other in self._needed:
            if len(group) == self.group_size:
                break
            if other not in started and other != member and self.apart(other) not in kinds:
                group.append(other)
                kinds.add(self.apart(other))
        return group

    def take_groups(self) -> list[list[Any]]:
        """All needed members not yet started, in the groups that asking for them in order would
        compute (so an engine that runs groups elsewhere gives the same results); marks them started."""
        groups = []
        for member in self._needed:
            if member not in self._started:
                groups.append(self._group_from(member, self._started))
                self._started.update(groups[-1])
        return groups

    def result(self, member: Any) -> Any:
        if member not in self._ready:
            group = self._group_from(member, self._started)
            self._started.update(group)
            started = time.perf_counter()
            results = list(self.compute_group(group))
            if len(results) != len(group):
                raise RuntimeError(f"compute_group returned {len(results)} results for {len(group)} members")
            self._ready.update(zip(group, results))
            self._seconds.update((m, (time.perf_counter() - started) / len(group)) for m in group)
        value = self._ready.pop(member)
        if isinstance(value, BaseException):
            raise value
        return value

    def waiting(self) -> set[Any]:
        """Members computed (with another member's group) and not yet asked for."""
        return set(self._ready)

    def seconds(self, member: Any) -> float | None:
        """The member's share of its group's time, once computed."""
        return self._seconds.get(member)


@dataclass
class Outcome:
    """What became of one unit: its value, or the :class:`UnitFailed` it ended with; seconds of
    work (its share of its group's) and where it ran (:meth:`Worker.where`)."""

    key: str
    value: Any = None
    error: UnitFailed | None = None
    seconds: float = 0.0
    where: dict = field(default_factory=dict)


class LocalEngine:
    """Units computed one after another in this process: the default engine.

    ``unit`` and ``pool`` make units the way every engine runs them (a :class:`Call` built from
    the catalog's data, run by a :class:`Worker`); ``outcomes`` computes the pending units of one
    dataset save and yields each as soon as it exists.
    """

    name = "local"

    def __init__(self) -> None:
        self.worker = Worker()

    def unit(self, fingerprint: str, make_call: Callable[[], Call]) -> Deferred:
        return Deferred(fingerprint, lambda: make_call().run(self.worker), call=make_call, engine=self)

    def pool(self, make_call: Callable[[list[Any]], Call], group_size: int,
             apart: Callable[[Any], Any] | None = None) -> WorkPool:
        return WorkPool(lambda members: make_call(members).run(self.worker), group_size, apart,
                        make_call=make_call, engine=self)

    def outcomes(self, pending: dict[str, Any]) -> Iterator[Outcome]:
        """Computes ``pending`` (key order; a value is a Deferred, a callable or a plain value) here.

        Results computed along with a unit (its group) are yielded next, before new work starts.
        A :class:`UnitFailed` is that unit's outcome; any other exception stops the save."""
        todo = list(pending)
        while todo:
            key = todo.pop(0)
            value = pending[key]
            pool = value.pool if isinstance(value, Deferred) else None
            started = time.perf_counter()
            try:
                result = value() if callable(value) else value
            except UnitFailed as error:  # that unit's own problem: the others go on
                yield Outcome(key, error=error, where=self.worker.where())
            else:
                seconds = time.perf_counter() - started
                if pool is not None:  # its share of its group's time
                    seconds = pool.seconds(value.member) or seconds
                yield Outcome(key, result, seconds=seconds, where=self.worker.where())
            waiting = pool.waiting() if pool is not None else set()
            if waiting:
                ready = [k for k in todo if getattr(pending[k], "pool", None) is pool and pending[k].member in waiting]
                todo = ready + [k for k in todo if k not in ready]


def engine_of(values: Iterable[Any]) -> LocalEngine:
    """The engine the node chose for these units (a fresh local one for units made without one)."""
    return next((v.engine for v in values if isinstance(v, Deferred) and v.engine is not None), None) or LocalEngine()


class _AlreadySaved:
    """What a node's output becomes once its dataset has saved it (and done its deferred work)
    inside the node's clock (:class:`tint_distill.hooks.WorkInsideTheNode`): the datasets that
    do work on save take Kedro's own later save of it as a no-op."""

    def __repr__(self) -> str:
        return "ALREADY_SAVED"


ALREADY_SAVED = _AlreadySaved()


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _digest_ends(digest, file: Path, size: int, sample_bytes: int) -> None:
    """Feed the first and (for large files) the last ``sample_bytes`` of ``file`` into ``digest``."""
    with file.open("rb") as handle:
        digest.update(handle.read(sample_bytes))
        if size > 2 * sample_bytes:
            handle.seek(-sample_bytes, 2)
            digest.update(handle.read())


def folder_fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """Fingerprint of a model folder from file names, sizes and their first and last MiB.

    Cheap even for multi-GB weights, and unlike modification times it does not change when
    identical weights are written again.
    """
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}:{size}".encode())
        _digest_ends(digest, file, size, sample_bytes)
    return digest.hexdigest()[:16]


def file_fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """Fingerprint of one file (a weights file, say) from its size and first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    _digest_ends(digest, path, size, sample_bytes)
    return digest.hexdigest()[:16]


def episode_key(episode: int) -> str:
    """``episode_0003``: how every partitioned output names an episode."""
    return f"episode_{int(episode):04d}"


def partition_key(episode: int, class_name: str) -> str:
    """``episode_0003/fish``: where one class of one episode lives in partitioned outputs."""
    return f"{episode_key(episode)}/{slug(class_name)}"


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a class name.

    Names made only of ASCII letters, digits, ``_``, ``.`` and ``-`` (at most 64 characters,
    starting with a letter or digit) are kept as they are (``001.Black_footed_Albatross``). Any
    other name becomes a readable ASCII part plus the first 8 hex digits of the SHA-256 of the
    name (``a b`` -> ``a_b-c8687a08``, ``кот`` -> ``class-77095ebd``), so two different names
    never share a slug, and the class name itself is stored with every result.
    """
    text = str(name)
    if _SAFE_NAME.fullmatch(text):
        return text
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_")[:40] or "class"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class ClassNameCollisionError(ValueError):
    """Two class names would share one place on disk."""


def check_class_slugs(class_names) -> dict[str, str]:
    """``{class name: slug}``; two classes whose slugs are equal ignoring case (a case-insensitive
    file system would give them one folder) are an error naming both."""
    seen: dict[str, str] = {}
    slugs = {}
    for name in sorted({str(n) for n in class_names}):
        slugs[name] = slug(name)
        other = seen.setdefault(slugs[name].lower(), name)
        if other != name:
            raise ClassNameCollisionError(
                f"the classes '{other}' and '{name}' would be stored under one name ('{slugs[name]}', ignoring "
                "case); rename one of the class folders."
            )
    return slugs
