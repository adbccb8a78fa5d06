"""A store of expensive partitioned work that never loses or silently reuses a result.

Each partition (one class of one episode, one student, ...) is kept in one *version per
fingerprint*: what it was computed from (pixels, settings, model, algorithm version, see
:mod:`tint_distill.work`). Layout under ``path``::

    <key>/<fingerprint>/                 one finished version: the partition's folder, or a folder
                                         holding ``<last part of key><suffix>``
    <key>/<fingerprint>.done             its completion marker (JSON), written last
    _current.json                        the keys and fingerprints of the last run that saved here

- A version is computed into a hidden staging folder, renamed into place, then marked done, so a
  run killed at any moment leaves no version that looks finished and is not; a version without
  its marker is recomputed.
- A run that needs other partitions (other episodes, another seed, another environment, another
  setting) adds versions and never removes or overwrites one: going back reuses them.
- ``load()`` returns exactly the partitions of the last run that saved here (``_current.json``),
  so downstream stages read the current run's work and nothing else.
- Old versions stay until the user prunes them explicitly (:meth:`ResumablePartitionedDataset.prune`,
  ``kedro prune``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import uuid
from copy import deepcopy
from datetime import datetime, timezone
from typing import Any

from kedro.io import DatasetError
from kedro_datasets._typing import ImagePreview, TablePreview
from kedro_datasets.partitions import PartitionedDataset

from tint_distill.data.grids import image_grid
from tint_distill.datasets.png_image import png_preview
from tint_distill.work import ALREADY_SAVED, Deferred, UnitFailed, engine_of, fingerprint

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".done"
CURRENT_FILE = "_current.json"


class ResumablePartitionedDataset(PartitionedDataset):
    """Partitions saved one at a time as they are computed, one immutable version per fingerprint.

    ``save({key: value})``: a :class:`Deferred` whose version is already finished is reused
    (unless forced); anything else is computed (if callable) and saved as a new version. Plain
    values are versioned by a hash of their JSON form. A partition may be a file or a folder
    (``filename_suffix: ""`` with a folder dataset).
    """

    does_work_on_save = True  # see tint_distill.hooks.WorkInsideTheNode

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

    def _is_done(self, key: str, version: str) -> bool:
        return self._marker_record(key, version) is not None

    def current(self) -> dict[str, str]:
        """``{key: fingerprint}`` of the last run that saved here (empty if none did)."""
        path = self._under(CURRENT_FILE)
        if not self._filesystem.exists(path):
            return {}
        with self._filesystem.open(path, "r") as handle:
            return dict(json.load(handle)["partitions"])

    @staticmethod
    def _version_of(value: Any) -> str:
        if isinstance(value, Deferred):
            return value.fingerprint
        if callable(value):
            raise DatasetError("a callable partition must be a Deferred carrying the fingerprint of its inputs")
        return fingerprint(value)

    # --- the dataset interface --------------------------------------------------------------

    def load(self) -> dict[str, Deferred]:
        """``{key: Deferred(fingerprint, load)}`` for the finished partitions of the last run that
        saved here; the fingerprint lets later stages chain on it, and ``record`` is what the
        partition's marker says (seconds, host, device: the compute planner's input)."""
        current = self.current()
        if not current and self._filesystem.exists(self._under(CURRENT_FILE)):
            return {}  # the last run that saved here had nothing to make (a stage its settings switch off)
        markers = {key: self._marker_record(key, version) for key, version in current.items()}
        done = {key: version for key, version in current.items() if markers[key] is not None}
        if not done:
            raise DatasetError(f"No finished partitions in '{self._path}': run the pipeline that produces them.")
        if len(done) < len(current):
            logger.warning(
                "%s: %d of the %d partitions of the last run that saved here are not finished (was it "
                "interrupted?); using the %d finished ones. Rerun the pipeline that produces them to complete it.",
                self._path, len(current) - len(done), len(current), len(done),
            )
        return {
            key: Deferred(version, self._version_dataset(key, version).load, record=markers[key])
            for key, version in sorted(done.items())
        }

    def save(self, data: dict[str, Any]) -> None:
        if data is ALREADY_SAVED:
            return
        versions = {key: self._version_of(value) for key, value in data.items()}
        self._filesystem.makedirs(self._normalized_path, exist_ok=True)
        record = {"partitions": dict(sorted(versions.items())), "saved_at": _now()}
        self._write_atomically(self._under(CURRENT_FILE), json.dumps(record, indent=1))
        pending = {}
        for key, value in sorted(data.items()):
            if (isinstance(value, Deferred) and value.force) or not self._is_done(key, versions[key]):
                pending[key] = value
                if isinstance(value, Deferred):
                    value.needed()  # before any work starts: pooled work groups exactly what is missing
        failures: list[tuple[str, UnitFailed]] = []
        engine = engine_of(pending.values())
        outcomes = engine.outcomes(pending)
        try:
            for position, outcome in enumerate(outcomes, start=1):
                key = outcome.key
                if outcome.error is not None:
                    logger.error("%s: partition %s failed: %s", self._path, key, outcome.error)
                    failures.append((key, outcome.error))
                    continue
                value = pending[key]
                self._commit(key, versions[key], outcome.value, outcome.seconds, outcome.where,
                             replace=isinstance(value, Deferred) and value.force)
                logger.info("%s: saved partition %s (%d / %d to compute) in %.1f s%s", self._path, key, position,
                            len(pending), outcome.seconds,
                            f" on {outcome.where['host']}, {outcome.where['device']}" if engine.name != "local" else "")
        finally:
            outcomes.close()
        if len(pending) < len(data):
            logger.info("%s: %d of %d partitions were already done and reused", self._path, len(data) - len(pending),
                        len(data))
        self._invalidate_caches()
        if failures:
            first_key, first = failures[0]
            raise UnitFailed(
                f"{len(failures)} of {len(pending)} partitions of '{self._path}' failed "
                f"({', '.join(key for key, _ in failures)}); all the others are saved and a rerun reuses them. "
                f"First failure, {first_key}: {first}"
            ) from first

    def _commit(self, key: str, version: str, result: Any, seconds: float, where: dict, replace: bool) -> None:
        """Write ``result`` as version ``version`` of ``key``: staged, renamed into place, marked done."""
        fs = self._filesystem
        target = self._version_dir(key, version)
        parent = posixpath.dirname(target)
        staging = posixpath.join(parent, f".{version}.{uuid.uuid4().hex[:8]}.tmp")
        fs.makedirs(staging, exist_ok=True)
        try:
            self._dataset_in(staging, key).save(result)
            if fs.exists(target):
                if self._is_done(key, version) and not replace:
                    return  # finished meanwhile by someone else: theirs is as good as ours
                # an unfinished leftover (killed before its marker), or an explicit request to redo it
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
        }
        self._write_atomically(self._marker(key, version), json.dumps(marker, indent=1))

    def _exists(self) -> bool:
        return any(self._is_done(key, version) for key, version in self.current().items())

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

    def preview(self, nrows: int = 20) -> TablePreview:
        """The last run's partitions with the seconds each took (Kedro-Viz times only the planning
        node; the work happens while this dataset saves)."""
        rows = self.finished()
        total = sum(r["seconds"] or 0 for r in rows)
        data = [[r["partition"], r["seconds"], r["fingerprint"], r["saved_at"]] for r in rows[:nrows]]
        if len(rows) > nrows:
            data.append([f"... {len(rows) - nrows} more", None, None, None])
        data.append([f"total ({len(rows)} partitions)", round(total, 1), None, None])
        return TablePreview({"index": list(range(len(data))), "columns": ["partition", "seconds", "fingerprint", "saved_at"],
                             "data": data})

    # --- explicit clean-up --------------------------------------------------------------------

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
        kept = {norm(self._under(CURRENT_FILE))}
        for key, version in self.current().items():
            if self._is_done(key, version):
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
