"""A trained student's weights as one ``.safetensors`` file with its training record inside."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset
from safetensors import safe_open
from safetensors.torch import save_file

from tint_distill.datasets.kept_models import keep_aside, previous_path
from tint_distill.work import Deferred

logger = logging.getLogger(__name__)


def read_checkpoint_record(path: str | Path) -> dict:
    """The training record stored in a checkpoint written by :class:`StudentCheckpointDataset` ({} if none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("record", "{}"))


def _record_or_none(path: Path) -> dict:
    """A kept checkpoint's record; {} when it is missing or unreadable (then it is not restored)."""
    try:
        return read_checkpoint_record(path)
    except Exception as error:  # noqa: BLE001 - a damaged kept file must not block training
        logger.warning("%s cannot be read (%s): not restoring it.", path, error)
        return {}


class StudentCheckpointDataset(AbstractDataset[Any, Path]):
    """A student's state dict (``.safetensors``) and its JSON training record (in the file's metadata).

    ``load()`` returns the file's path (students read it as ``pretrained_weights``, on any worker),
    or None when there is none yet (runs whose students start otherwise do not need it).
    ``save()`` takes ``(state_dict, record)`` or a :class:`~tint_distill.work.Deferred` giving
    one: the Deferred trains only when the saved record holds another fingerprint (or the file is
    missing). A checkpoint that a new fingerprint replaces is kept beside it as
    ``<name>.previous-<fingerprint>.safetensors``, never deleted, and a Deferred whose fingerprint
    such a kept file holds gets it back instead of training again.
    """

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    @property
    def filepath(self) -> Path:
        return self._filepath

    def load(self) -> Path | None:
        return self._filepath.resolve() if self._filepath.is_file() else None

    def save(self, data: Any) -> None:
        if isinstance(data, Deferred) and not data.mark_saved():
            return  # trained already, inside its node's clock (tint_distill.hooks.NodeClock)
        stored = read_checkpoint_record(self._filepath).get("fingerprint")
        if isinstance(data, Deferred):
            if not data.force and stored == data.fingerprint:
                logger.info("Base student: reusing %s (up to date, fingerprint %s).", self._filepath, stored)
                return
            kept = previous_path(self._filepath, data.fingerprint)
            if not data.force and _record_or_none(kept).get("fingerprint") == data.fingerprint:
                keep_aside(self._filepath, stored)
                os.replace(kept, self._filepath)
                logger.info("Base student: reusing %s (restored the checkpoint kept for fingerprint %s).",
                            self._filepath, data.fingerprint)
                return
            logger.info("Base student: training %s (%s).", self._filepath,
                        "retrain requested" if data.force else "no checkpoint yet" if stored is None
                        else f"its data or settings changed: fingerprint {data.fingerprint}, saved {stored}")
            data = data()
        state_dict, record = data
        keep_aside(self._filepath, stored)
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        staging = self._filepath.with_name(f".{self._filepath.name}.partial")
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        save_file(tensors, str(staging), metadata={"record": json.dumps(record)})
        os.replace(staging, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
