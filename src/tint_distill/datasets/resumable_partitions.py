"""A PartitionedDataset that saves each partition as soon as it is computed and skips the
partitions that are already done (see :mod:`tint_distill.work`)."""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

from kedro.io import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from tint_distill.work import Deferred

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".done"


class ResumablePartitionedDataset(PartitionedDataset):
    """Partitions listed by their completion markers (``<partition>.done``, holding a fingerprint).

    On save, for each ``key -> value``: a :class:`Deferred` whose fingerprint matches the marker
    is skipped; anything else is computed (if callable), saved, then marked done. Partitions
    that are not in the saved dict are removed, so the folder always mirrors the latest run.
    A partition may be a file or a folder (``filename_suffix: ""`` with a folder dataset).
    """

    def __init__(self, *, path: str, dataset: Any, filename_suffix: str = "", **kwargs: Any):
        kwargs.setdefault("save_lazily", True)
        super().__init__(path=path, dataset=dataset, filename_suffix=filename_suffix, **kwargs)

    def _marker(self, partition_id: str) -> str:
        return self._partition_to_path(partition_id) + MARKER_SUFFIX

    def _done_fingerprints(self) -> dict[str, str]:
        if not self._filesystem.exists(self._normalized_path):
            return {}
        done = {}
        for marker in self._filesystem.find(self._normalized_path):
            if marker.endswith(MARKER_SUFFIX):
                partition_id = self._path_to_partition(marker[: -len(MARKER_SUFFIX)])
                with self._filesystem.open(marker, "r") as handle:
                    done[partition_id] = handle.read().strip()
        return done

    def _dataset_at(self, partition_id: str):
        kwargs = deepcopy(self._dataset_config)
        kwargs[self._filepath_arg] = self._join_protocol(self._partition_to_path(partition_id))
        return self._dataset_type(**kwargs)

    def _remove(self, partition_id: str) -> None:
        for path in (self._marker(partition_id), self._partition_to_path(partition_id)):
            if self._filesystem.exists(path):
                self._filesystem.rm(path, recursive=True)

    def load(self) -> dict[str, Deferred]:
        """``{key: Deferred(fingerprint, load)}``: callables like PartitionedDataset's, which also
        carry the fingerprint of the work that made them (so later stages can chain on it)."""
        done = self._done_fingerprints()
        if not done:
            raise DatasetError(f"No finished partitions in '{self._path}': run the pipeline that produces them.")
        return {key: Deferred(done[key], self._dataset_at(key).load) for key in sorted(done)}

    def save(self, data: dict[str, Any]) -> None:
        done = self._done_fingerprints()
        for stale in sorted(set(done) - set(data)):
            self._remove(stale)
        reused = 0
        for position, (partition_id, value) in enumerate(sorted(data.items()), start=1):
            key = value.fingerprint if isinstance(value, Deferred) else None
            if key is not None and done.get(partition_id) == key:
                reused += 1
                continue
            self._remove(partition_id)  # a half-written partition from an interrupted run
            result = value() if callable(value) else value
            self._dataset_at(partition_id).save(result)
            with self._filesystem.open(self._marker(partition_id), "w") as handle:
                handle.write(key or "")
            logger.info("%s: saved partition %s (%d / %d)", self._path, partition_id, position, len(data))
        if reused:
            logger.info("%s: %d of %d partitions were already done and reused", self._path, reused, len(data))
        self._invalidate_caches()

    def _exists(self) -> bool:
        return bool(self._done_fingerprints())
