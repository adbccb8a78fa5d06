"""A store of expensive partitioned work that never loses or silently reuses a result.

Each partition (one class of one episode, one student, ...) is kept in one *version per
fingerprint*: what it was computed from (pixels, settings, model, algorithm version, see
:mod:`tint_distill.work`). Layout under ``path``::

    <key>/<fingerprint>/                 one finished version: the partition's folder, or a folder
                                         holding ``<last part of key><suffix>``
    <key>/<fingerprint>.done             its completion marker (JSON), written last: when, where, and
                                         what the version holds (every file's size and SHA-256)
    _current.json                        the keys and fingerprints of the last complete run that saved here
    _pending.json                        those of a later run that has not completed (running, killed or
                                         failed, here or in a later stage); made current when it completes

- A version is computed into a hidden staging folder, renamed into place, then marked done, so a
  run killed at any moment leaves no version that looks finished and is not; a version without
  its marker is recomputed.
- A finished version whose files no longer match its marker (a file deleted, truncated or
  added) is never used: a run recomputes it with a warning naming it, a load refuses it with the
  fix in the message. Sizes are checked on every use; hashes on request (``kedro verify``).
- A run that needs other partitions (other episodes, another seed, another environment, another
  setting) adds versions and never removes or overwrites one: going back reuses them.
- ``load()`` returns exactly the partitions of the last run that saved here (``_pending.json`` if
  that run has not completed, else ``_current.json``), so downstream stages read the current run's
  work and nothing else. A run is complete when its whole pipeline is: the project's hook calls
  :meth:`ResumablePartitionedDataset.complete_run` on every store the pipeline saved, after its
  last node, so a run killed in a later stage leaves the last complete run known here too.
- Old versions stay until the user prunes them explicitly (:meth:`ResumablePartitionedDataset.prune`,
  ``kedro prune``), which keeps the last complete run's versions and the finished ones of a run
  that has not completed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import socket
import uuid
from collections.abc import Sequence
from copy import deepcopy
from datetime import datetime, timezone
from typing import Any

from kedro.io import DatasetError
from kedro_datasets._typing import ImagePreview, TablePreview
from kedro_datasets.partitions import PartitionedDataset

from tint_distill.data.grids import image_grid
from tint_distill.datasets.folder_size import FolderSize
from tint_distill.datasets.png_image import png_preview
from tint_distill.errors import PriorOutputMissingError, UserInputError
from tint_distill.fingerprints import fingerprint
from tint_distill.keys import PartitionKey, episode_key
from tint_distill.work import Outcome, Stored, UnitFailed, Work

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".done"
CURRENT_FILE = "_current.json"
PENDING_FILE = "_pending.json"


class DamagedPartitionError(UserInputError, DatasetError):
    """A finished partition's files do not match what its marker recorded."""


class NoFinishedPartitionsError(PriorOutputMissingError, DatasetError):
    """A stage's outputs are read before the pipeline that makes them has finished any."""


class ResumablePartitionedDataset(FolderSize, PartitionedDataset):
    """Partitions saved one at a time as they are computed, one immutable version per fingerprint.

    ``save(work)``: the units of a :class:`~tint_distill.work.Work` whose version is already
    finished are reused; the others are computed by its engine and saved as they arrive. Plain
    ``{key: value}`` partitions are versioned by a hash of their JSON form. A partition may be a
    file or a folder (``filename_suffix: ""`` with a folder dataset).
    """

    def __init__(self, *, path: str, dataset: Any, filename_suffix: str = "", **kwargs: Any):
        kwargs.setdefault("save_lazily", True)
        super().__init__(path=path, dataset=dataset, filename_suffix=filename_suffix, **kwargs)

    # --- where things are -------------------------------------------------------------------

    def _under(self, *parts: str) -> str:
        return posixpath.join(self._normalized_path, *parts)

    def _version_dir(self, key: str, version: str) -> str:
        return self._under(key, version)

    def _marker(self, key: str, version: str) -> str:
        return self._version_dir(key, version) + MARKER_SUFFIX

    def _version_dataset(self, key: str, version: str):
        """The underlying dataset of a finished version."""
        return self._dataset_in(self._version_dir(key, version), key)

    def _dataset_in(self, folder: str, key: str):
        """The underlying dataset of one version, stored in ``folder``."""
        kwargs = deepcopy(self._dataset_config)
        target = folder if not self._filename_suffix else posixpath.join(folder, key.rsplit("/", 1)[-1] + self._filename_suffix)
        kwargs[self._filepath_arg] = self._join_protocol(target)
        return self._dataset_type(**kwargs)

    # --- bookkeeping ------------------------------------------------------------------------

    def _write_atomically(self, path: str, text: str) -> None:
        staging = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with self._filesystem.open(staging, "w") as handle:
            handle.write(text)
        self._filesystem.mv(staging, path)

    def _marker_record(self, key: str, version: str) -> dict | None:
        """What the version's marker records, or None when it is not finished (no valid marker)."""
        marker = self._marker(key, version)
        if not self._filesystem.exists(marker):
            return None
        try:
            with self._filesystem.open(marker, "r") as handle:
                record = json.load(handle)
        except (ValueError, OSError):
            return None
        return record if record.get("fingerprint") == version else None

    def _files(self, key: str, version: str) -> dict[str, int]:
        """``{path relative to the version folder: size}`` of every file the version holds, less what
        file browsers leave in folders they show (hidden files, ``Thumbs.db``, ``desktop.ini``):
        datasets never write such names, and nothing reads them."""
        folder = self._version_dir(key, version)
        root = self._filesystem._strip_protocol(folder).rstrip("/") + "/"
        found = self._filesystem.find(folder, detail=True) if self._filesystem.exists(folder) else {}
        files = {path[len(root):] if path.startswith(root) else posixpath.basename(path): int(info["size"])
                 for path, info in found.items() if info.get("type") != "directory"}
        return {name: size for name, size in files.items() if not _browser_litter(posixpath.basename(name))}

    def _hash(self, key: str, version: str, name: str) -> str:
        digest = hashlib.sha256()
        with self._filesystem.open(posixpath.join(self._version_dir(key, version), name), "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def damage(self, key: str, version: str, record: dict, hashes: bool = False) -> str | None:
        """What differs between a finished version's files and what its marker recorded (None if
        nothing, or if the marker predates these records): sizes always, contents with ``hashes``."""
        recorded = record.get("files")
        if recorded is None:
            return None  # a marker written before markers recorded their files: trusted as it is
        found = self._files(key, version)
        missing = sorted(set(recorded) - set(found))
        extra = sorted(set(found) - set(recorded))
        resized = sorted(n for n in set(recorded) & set(found) if found[n] != recorded[n]["size"])
        altered = []
        if hashes and not (missing or extra or resized):
            altered = sorted(n for n in recorded if self._hash(key, version, n) != recorded[n]["sha256"])
        problems = [f"{what}: {', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}"
                    for what, names in (("missing", missing), ("not recorded", extra),
                                        ("of another size", resized), ("changed", altered)) if names]
        return "; ".join(problems) or None

    def _intact_record(self, key: str, version: str, warn: bool = True) -> dict | None:
        """The marker's record of a finished version whose files match it; None otherwise (with a
        warning naming the damage when the marker is there but the files are not what it recorded)."""
        record = self._marker_record(key, version)
        if record is None:
            return None
        damage = self.damage(key, version, record)
        if damage:
            if warn:
                logger.warning("%s: finished partition %s (version %s) is damaged (%s): it is recomputed.",
                               self._path, key, version, damage)
            return None
        return record

    def _is_done(self, key: str, version: str) -> bool:
        return self._intact_record(key, version) is not None

    def _read_run_file(self, name: str) -> dict[str, str] | None:
        """``{key: fingerprint}`` from ``_current.json`` or ``_pending.json``; None if absent."""
        path = self._under(name)
        if not self._filesystem.exists(path):
            return None
        try:
            with self._filesystem.open(path, "r") as handle:
                return dict(json.load(handle)["partitions"])
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise DatasetError(
                f"{path} is unreadable ({type(error).__name__}: {error}): it records which partitions the last "
                f"run used. Move it aside and rerun the pipeline that saves '{self._path}' (finished partitions "
                "are reused); no partition was removed.") from error

    def current(self) -> dict[str, str]:
        """``{key: fingerprint}`` of the last run that saved here: the one in progress or that did
        not complete (``_pending.json``) if any, else the last complete one (empty if none did)."""
        pending = self._read_run_file(PENDING_FILE)
        return pending if pending is not None else (self._read_run_file(CURRENT_FILE) or {})

    def complete_run(self) -> bool:
        """The run that saved here has completed (its whole pipeline): its partitions become the last
        complete run's (``_current.json``). Nothing happens unless its save finished without failure.
        Returns whether a run was made current."""
        path = self._under(PENDING_FILE)
        if not self._filesystem.exists(path):
            return False
        with self._filesystem.open(path, "r") as handle:
            run = json.load(handle)
        if "saved_at" not in run:
            return False
        self._write_atomically(self._under(CURRENT_FILE), json.dumps(run, indent=1))
        self._filesystem.rm(path)
        self._invalidate_caches()
        return True

    def _saved_anything(self) -> bool:
        return any(self._filesystem.exists(self._under(name)) for name in (CURRENT_FILE, PENDING_FILE))


    # --- the dataset interface --------------------------------------------------------------

    def load(self) -> dict[str, Stored]:
        """``{key: Stored(fingerprint, load, record)}`` for the finished partitions of the last run that
        saved here; the fingerprint lets later stages chain on it, and ``record`` is what the
        partition's marker says (seconds, host, device: the compute planner's input)."""
        current = self.current()
        if not current and self._saved_anything():
            return {}  # the last run that saved here had nothing to make (a stage its settings switch off)
        markers = {key: self._marker_record(key, version) for key, version in current.items()}
        damaged = {key: self.damage(key, current[key], record) for key, record in markers.items() if record}
        damaged = {key: damage for key, damage in damaged.items() if damage}
        if damaged:
            listed = "; ".join(f"{key} ({damage})" for key, damage in sorted(damaged.items())[:5])
            raise DamagedPartitionError(
                f"{len(damaged)} finished partition(s) of '{self._path}' no longer hold what was saved: {listed}. "
                f"Rerun the pipeline that saves '{self._path}' (a plain `kedro run` does): it recomputes them.")
        done = {key: version for key, version in current.items() if markers[key] is not None}
        if not done:
            raise NoFinishedPartitionsError(
                f"No finished partitions in '{self._path}': run the pipeline that produces them.")
        if len(done) < len(current):
            logger.warning(
                "%s: %d of the %d partitions of the last run that saved here are not finished (was it "
                "interrupted?); using the %d finished ones. Rerun the pipeline that produces them to complete it.",
                self._path, len(current) - len(done), len(current), len(done),
            )
        return {key: self._stored(key, version, markers[key]) for key, version in sorted(done.items())}

    def _stored(self, key: str, version: str, record: dict) -> Stored:
        """A finished version as later stages read it: ``load`` and, where its dataset has one,
        ``load_sidecar`` (its small description alone); a file that cannot be read is an error
        naming it and the fix."""
        dataset = self._version_dataset(key, version)
        sidecar = getattr(dataset, "load_sidecar", None)
        return Stored(version, self._reader(dataset.load, key, version), record=record,
                      sidecar=None if sidecar is None else self._reader(sidecar, key, version))

    def _reader(self, read, key: str, version: str):
        def load() -> Any:
            try:
                return read()
            except Exception as error:  # noqa: BLE001 - any decoding error of a stored file
                raise DamagedPartitionError(
                    f"{self._path}: finished partition {key} (version {version}) cannot be read: {error}. Run "
                    f"`kedro verify --repair` (it marks damaged partitions unfinished), then rerun the pipeline "
                    f"that saves '{self._path}' to recompute it.") from error

        return load

    def save(self, data: Work | dict[str, Any]) -> None:
        """Save a :class:`~tint_distill.work.Work` (its units not finished yet are computed by its
        engine, each saved as it arrives) or plain ``{key: value}`` partitions."""
        if isinstance(data, Work):
            if not data.mark_saved():
                return  # saved already, inside its node's clock (tint_distill.hooks.NodeClock)
            versions = {key: unit.fingerprint for key, unit in data.units.items()}
        else:
            versions = {key: fingerprint(value) for key, value in data.items()}
        self._filesystem.makedirs(self._normalized_path, exist_ok=True)
        run = {"partitions": dict(sorted(versions.items())), "started_at": _now(), "pid": os.getpid(),
               "host": socket.gethostname()}
        self._write_atomically(self._under(PENDING_FILE), json.dumps(run, indent=1))  # current: see complete_run
        pending = [key for key in sorted(versions) if not self._is_done(key, versions[key])]
        sharing = {}  # fingerprint -> the pending keys with it (the same supports in two task splits, say)
        for key in pending:
            sharing.setdefault(versions[key], []).append(key)
        if isinstance(data, Work):  # each distinct version computed once, saved under every key that has it
            outcomes = data.engine.run(data, [data.units[keys[0]] for keys in sharing.values()])
        else:
            here = {"host": socket.gethostname(), "pid": os.getpid(), "device": "cpu"}  # values made by the node
            outcomes = (Outcome(key, data[key], where=here) for key in pending)
        failures: list[tuple[str, BaseException]] = []
        try:
            for position, outcome in enumerate(outcomes, start=1):
                key = outcome.key
                keys = sharing[versions[key]] if isinstance(data, Work) else [key]
                if outcome.error is not None:
                    logger.error("%s: partition %s failed: %s", self._path, ", ".join(keys), outcome.error)
                    failures += [(same, outcome.error) for same in keys]
                    continue
                for same in keys:
                    self._commit(same, versions[key], outcome.value, outcome.seconds, outcome.where)
                remote = outcome.where and outcome.where.get("host") != socket.gethostname()
                logger.info("%s: saved partition %s (%d / %d to compute) in %.1f s%s", self._path, ", ".join(keys),
                            position, len(sharing), outcome.seconds,
                            f" on {outcome.where['host']}, {outcome.where['device']}" if remote else "")
        finally:
            if hasattr(outcomes, "close"):
                outcomes.close()
        if len(pending) < len(versions):
            logger.info("%s: %d of %d partitions were already done and reused", self._path,
                        len(versions) - len(pending), len(versions))
        if isinstance(data, Work) and len(sharing) < len(pending):
            logger.info("%s: %d partitions had the same fingerprint as another and were computed once", self._path,
                        len(pending) - len(sharing))
        if not failures:  # this stage is done; the run is complete when its pipeline is (complete_run)
            self._write_atomically(self._under(PENDING_FILE), json.dumps({**run, "saved_at": _now()}, indent=1))
        self._invalidate_caches()
        if failures:
            first_key, first = failures[0]
            raise UnitFailed(
                f"{len(failures)} of {len(pending)} partitions of '{self._path}' failed "
                f"({', '.join(key for key, _ in failures)}); all the others are saved and a rerun reuses them. "
                f"First failure, {first_key}: {first}"
            ) from first

    def _commit(self, key: str, version: str, result: Any, seconds: float, where: dict) -> None:
        """Write ``result`` as version ``version`` of ``key``: staged, renamed into place, marked done."""
        fs = self._filesystem
        target = self._version_dir(key, version)
        parent = posixpath.dirname(target)
        staging = posixpath.join(parent, f".{version}.{uuid.uuid4().hex[:8]}.tmp")
        fs.makedirs(staging, exist_ok=True)
        try:
            self._dataset_in(staging, key).save(result)
            if fs.exists(target):
                if self._intact_record(key, version, warn=False) is not None:
                    return  # finished meanwhile by someone else: theirs is as good as ours
                # an unfinished leftover (killed before its marker)
                if fs.exists(self._marker(key, version)):
                    fs.rm(self._marker(key, version))
                fs.rm(target, recursive=True)
            fs.mv(staging, target, recursive=True)
        finally:
            if fs.exists(staging):
                fs.rm(staging, recursive=True)
        marker = {
            "fingerprint": version,
            "key": key,
            "saved_at": _now(),
            "seconds": round(seconds, 3),
            "host": where.get("host", socket.gethostname()),  # where the work ran (a Ray worker, say)
            "pid": where.get("pid", os.getpid()),
            "device": where.get("device"),
            "files": {name: {"size": size, "sha256": self._hash(key, version, name)}
                      for name, size in sorted(self._files(key, version).items())},
        }
        self._write_atomically(self._marker(key, version), json.dumps(marker, indent=1))

    def _exists(self) -> bool:
        return any(self._intact_record(key, version, warn=False) is not None
                   for key, version in self.current().items())

    # --- Kedro-Viz ------------------------------------------------------------------------------

    def finished(self) -> list[dict]:
        """The finished partitions of the last run with what their markers record (key, fingerprint,
        seconds of work, when), in key order: where a stage's time went, unit by unit."""
        rows = []
        for key, version in sorted(self.current().items()):
            marker = self._marker_record(key, version)
            if marker is not None:
                rows.append({"partition": key, "fingerprint": version, "seconds": marker.get("seconds"),
                             "saved_at": marker.get("saved_at")})
        return rows

    def preview(self, by: str | None = None, first: Sequence[str] = (), mean_of: dict[str, str] | None = None,
                count: str = "partitions", nrows: int = 30) -> TablePreview:
        """The last run's partitions as Kedro-Viz's table, what matters on top: one row per group of
        partitions (``by``: ``method``, ``episode`` or ``class`` of their keys; each partition alone
        without it), the groups named in ``first`` before the others; per group, how many partitions
        (``count`` names them), the mean of each ``mean_of`` field (``{column: dotted.path}`` in each
        partition's description, e.g. a student's ``accuracy``) and the seconds their work took
        (Kedro-Viz times only the planning node; the work happens while this dataset saves). Groups
        past ``nrows`` share one row; the last row sums them all."""
        mean_of = dict(mean_of or {})
        groups: dict[str, list[dict]] = {}
        for row in self.finished():
            groups.setdefault(_group_of(row["partition"], by), []).append(row)
        order = [g for g in first if g in groups] + sorted(g for g in groups if g not in first)
        shown, rest = order[:nrows], order[nrows:]
        summaries = [(name, groups[name]) for name in shown]
        if rest:
            summaries.append((f"{len(rest)} more", [row for name in rest for row in groups[name]]))
        everything = [row for rows in groups.values() for row in rows]
        columns = [by or "partition", *([count] if by else []), *mean_of, "seconds"]
        data = [self._summary_row(name, rows, by, mean_of) for name, rows in summaries]
        total = ["all", len(everything)] if by else [f"all ({len(everything)} {count})"]
        data.append([*total, *[""] * len(mean_of), _seconds(everything)])
        return TablePreview({"index": list(range(len(data))), "columns": columns, "data": data})

    def _summary_row(self, name: str, rows: list[dict], by: str | None, mean_of: dict[str, str]) -> list:
        descriptions = [self._description(r) for r in rows] if mean_of else []
        means = []
        for path in mean_of.values():
            values = [v for v in (_field(d, path) for d in descriptions) if isinstance(v, (int, float))]
            means.append(round(sum(values) / len(values), 4) if values else "")
        return [name, *([len(rows)] if by else []), *means, _seconds(rows)]

    def _description(self, row: dict) -> Any:
        """A finished partition's small description: its sidecar where its dataset has one, else what it loads."""
        stored = self._stored(row["partition"], row["fingerprint"], {})
        return (stored.sidecar or stored.load)()

    # --- explicit checks and clean-up ------------------------------------------------------------

    def in_use(self) -> list[tuple[str, str]]:
        """``(key, fingerprint)`` of every partition that prune keeps: the last complete run's and
        those of a later run that has not completed."""
        complete, unfinished = self._read_run_file(CURRENT_FILE), self._read_run_file(PENDING_FILE)
        return sorted(set((complete or {}).items()) | set((unfinished or {}).items()))

    def verify(self, *, repair: bool = False) -> dict[str, Any]:
        """Check every finished partition that prune keeps against its marker, file by file (sizes and
        SHA-256); one whose marker predates these records is loaded instead. With ``repair``, a damaged
        partition's marker is moved aside (``.done.damaged``), so that the next run recomputes it.
        Returns counts and ``damaged: [(key, what differs)]``."""
        checked, unrecorded, damaged = 0, 0, []
        for key, version in self.in_use():
            record = self._marker_record(key, version)
            if record is None:
                continue
            checked += 1
            if "files" in record:
                damage = self.damage(key, version, record, hashes=True)
            else:
                unrecorded += 1
                try:
                    self._version_dataset(key, version).load()
                    damage = None
                except Exception as error:  # noqa: BLE001 - any decoding error of a stored file
                    damage = f"unreadable: {error}"
            if damage:
                damaged.append((key, damage))
                if repair:
                    self._filesystem.mv(self._marker(key, version), self._marker(key, version) + ".damaged")
        self._invalidate_caches()
        return {"checked": checked, "unrecorded": unrecorded, "damaged": damaged}


    def prune(self, *, dry_run: bool = True) -> list[tuple[str, int]]:
        """Remove everything the last run that saved here does not use: versions of other
        settings, episodes or data, unfinished versions, staging leftovers and files of older
        layouts. Returns ``[(path, bytes)]`` of what was (or, with ``dry_run``, would be) removed."""
        fs = self._filesystem

        def norm(path: str) -> str:  # one spelling for what listing returns and what we compute
            return fs._strip_protocol(path).rstrip("/")

        root = norm(self._normalized_path)
        if not fs.exists(root):
            return []
        if not self._saved_anything():
            if any(fs.ls(root, detail=False)):
                raise DatasetError(
                    f"{root} holds partitions but no {CURRENT_FILE} saying which ones the last run used, so prune "
                    f"cannot tell what is in use and removes nothing there. Rerun the pipeline that saves "
                    f"'{self._path}' (finished partitions are reused) to record it, then prune.")
            return []
        kept = {norm(self._under(CURRENT_FILE)), norm(self._under(PENDING_FILE))}
        for key, version in self.in_use():  # the last complete run and a later one that has not completed
            if self._marker_record(key, version) is not None:
                kept |= {norm(self._version_dir(key, version)), norm(self._marker(key, version))}
        removable: list[tuple[str, int]] = []

        def visit(folder: str) -> None:
            for entry in sorted(fs.ls(folder, detail=False)):
                entry = norm(entry)
                if entry in kept:
                    continue
                if fs.isdir(entry) and any(k.startswith(entry + "/") for k in kept):
                    visit(entry)
                else:
                    removable.append((entry, int(fs.du(entry)) if fs.isdir(entry) else int(fs.size(entry))))

        visit(root)
        if not dry_run:
            for path, _ in removable:
                fs.rm(path, recursive=True)
            self._invalidate_caches()
        return removable


def _browser_litter(name: str) -> bool:
    return name.startswith(".") or name in ("Thumbs.db", "desktop.ini")


def _group_of(key: str, by: str | None) -> str:
    """The ``method``, ``episode`` or ``class`` part of a partition key (the key itself without ``by``,
    or when it is no episode key)."""
    if by is None:
        return key
    if by not in ("method", "episode", "class"):
        raise ValueError(f"preview by '{by}': must be method, episode or class")
    try:
        parsed = PartitionKey.parse(key)
    except ValueError:
        return key
    part = {"method": parsed.method, "episode": episode_key(parsed.episode), "class": parsed.class_slug}[by]
    return key if part is None else part


def _field(description: Any, path: str) -> Any:
    for name in path.split("."):
        if not isinstance(description, dict):
            return None
        description = description.get(name)
    return description


def _seconds(rows: list[dict]) -> float:
    return round(sum(r["seconds"] or 0 for r in rows), 1)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResumableImageSetsDataset(ResumablePartitionedDataset):
    """:class:`ResumablePartitionedDataset` of image folders, previewed as a grid of its images."""

    def preview(self, nrows: int = 6, images_per_row: int = 8, cell_size: int = 48, prefix: str = "") -> ImagePreview:
        """A row per partition of the last run (the first ``nrows`` whose key starts with ``prefix``):
        its first images."""
        rows = [r for r in self.finished() if r["partition"].startswith(prefix)]
        shown = rows[:nrows]
        grid = image_grid(
            [(r["partition"], self._version_dataset(r["partition"], r["fingerprint"]).load()[:images_per_row]) for r in shown],
            cell_size=cell_size, title=f"first {len(shown)} of {len(rows)} partitions of the last run",
        )
        return png_preview(grid)
