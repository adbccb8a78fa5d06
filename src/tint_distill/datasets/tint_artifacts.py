"""Catalog datasets for TINT's artefacts: the generator folder, class specialisations and
shards of generated images."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from PIL import Image
from safetensors.torch import load_file
from torchvision.utils import make_grid

from tint_distill.data.image_batch import ImageBatch
from tint_distill.datasets.folder_size import FolderSize
from tint_distill.datasets.kept_models import keep_aside, previous_path
from tint_distill.tint import (ClassSpecialisation, check_model_folder, load_specialisation,
                               read_specialisation_sidecar, save_specialisation)
from tint_distill.tensor_files import save_tensors
from tint_distill.tint.models import TRAINING_RECORD, read_training_record
from tint_distill.work import Deferred, NoModel

logger = logging.getLogger(__name__)


def _compact_tokenizer_file(folder: Path) -> None:
    """Rewrite ``tokenizer/tokenizer.json`` without indentation: the same content in half the bytes."""
    file = folder / "tokenizer" / "tokenizer.json"
    if file.is_file():
        file.write_text(json.dumps(json.loads(file.read_text(encoding="utf-8")), ensure_ascii=False,
                                   separators=(",", ":")), encoding="utf-8")


class DiffusersModelDataset(FolderSize, AbstractDataset[Any, Path]):
    """A Stable Diffusion 1.x diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ...).

    ``load()`` checks the folder and returns its path (nodes load the weights on the device
    and precision their parameters ask for). ``save()`` takes a diffusers pipeline
    (``save_pretrained``), the path of a folder to copy in, or a ``(pipeline, record)`` pair
    whose JSON-able ``record`` is written as ``training_record.json`` in the folder; it
    replaces the folder atomically. ``read_only: true`` protects a user's own model folder.

    Trained models are cached: ``save()`` also takes a :class:`~tint_distill.work.Deferred`
    and runs its ``compute()`` only when the folder's ``training_record.json`` holds another
    fingerprint (or none), or when the Deferred is forced. The record must then carry the
    fingerprint under ``"fingerprint"``.

    A model is never deleted: the folder a save replaces is kept beside it as
    ``<name>.previous-<its fingerprint>``, and a Deferred whose fingerprint such a kept folder
    holds gets it back (swapped in) instead of being trained again.

    ``optional: true``: a model some runs do not have (the task's domain generator): saving a
    :class:`~tint_distill.work.NoModel` leaves the folder as it is, and ``load()`` gives None while
    there is no folder.
    ``retrain_parameter`` is the parameter the up-to-date message names.
    """

    def __init__(self, *, path: str, read_only: bool = False, optional: bool = False,
                 retrain_parameter: str = "generator_pretraining.retrain", metadata: dict | None = None):
        self._path = Path(path)
        self._read_only = read_only
        self._optional = optional
        self._retrain_parameter = retrain_parameter
        self.metadata = metadata

    @property
    def path(self) -> Path:
        """Where the folder is (it may not exist yet)."""
        return self._path

    @property
    def read_only(self) -> bool:
        """A user's own model folder, which no pipeline may write."""
        return self._read_only

    def load(self) -> Path | None:
        if self._optional and not self._path.exists():
            return None
        return check_model_folder(self._path)

    def stored_fingerprint(self) -> str | None:
        """The fingerprint in the folder's training record, or None."""
        return read_training_record(self._path).get("fingerprint")

    def save(self, data: Any) -> None:
        if isinstance(data, NoModel) and self._optional:
            return  # no model this run
        if isinstance(data, Deferred) and not data.mark_saved():
            return  # trained already, inside its node's clock (tint_distill.hooks.NodeClock)
        if self._read_only:
            raise DatasetError(
                f"{self._path} is a read-only model folder in this environment; run the pipelines that "
                "use it (--pipelines experiment or tint) rather than the generator_pretraining pipeline that "
                "would overwrite it."
            )
        if isinstance(data, Deferred):
            if not data.force and self._exists() and self.stored_fingerprint() == data.fingerprint:
                logger.info("%s is up to date (fingerprint %s): not retraining it. To retrain, set the "
                            "parameter %s=true.", self._path, data.fingerprint, self._retrain_parameter)
                return
            kept = self.kept_folder(data.fingerprint)
            if not data.force and kept is not None:
                keep_aside(self._path, self.stored_fingerprint())
                kept.rename(self._path)
                logger.info("%s: restored the model kept for fingerprint %s (from %s) instead of retraining it.",
                            self._path, data.fingerprint, kept.name)
                return
            data = data()
        record = None
        if isinstance(data, tuple):
            data, record = data
            if not isinstance(record, dict):
                raise DatasetError(f"{self._path}: the training record must be a dict, got {type(record).__name__}")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._path.name}-", dir=self._path.parent))
        try:
            if hasattr(data, "save_pretrained"):
                data.save_pretrained(staging)
                _compact_tokenizer_file(staging)
            else:
                shutil.copytree(Path(data), staging, dirs_exist_ok=True)
            if record is not None:
                (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
            check_model_folder(staging)
            umask = os.umask(0)  # reading the umask means setting it: put it straight back
            os.umask(umask)
            staging.chmod(0o777 & ~umask)  # mkdtemp gives 0700; the folder gets what mkdir would give
            keep_aside(self._path, self.stored_fingerprint())
            staging.rename(self._path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def kept_folder(self, fingerprint: str) -> Path | None:
        """The complete model folder kept for ``fingerprint`` by an earlier replacement, if any."""
        folder = previous_path(self._path, fingerprint)
        if not (folder / "model_index.json").is_file():
            return None
        return folder if read_training_record(folder).get("fingerprint") == fingerprint else None

    def _exists(self) -> bool:
        return (self._path / "model_index.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "read_only": self._read_only, "optional": self._optional}


class SpecialisationDataset(AbstractDataset[ClassSpecialisation, ClassSpecialisation]):
    """One class specialisation: ``<name>.safetensors`` (tensors) + ``<name>.json`` (the rest). No pickle."""

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> ClassSpecialisation:
        return load_specialisation(self._filepath)

    def load_sidecar(self) -> dict[str, Any]:
        """The JSON sidecar alone (token, settings, diagnostics such as the reconstruction errors),
        for reports: the tensors (at SD size ~30 MB of null embeddings) are not read."""
        return read_specialisation_sidecar(self._filepath)

    def save(self, data: ClassSpecialisation) -> None:
        save_specialisation(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file() and self._filepath.with_suffix(".json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ImageSetDataset(AbstractDataset[Sequence, ImageBatch]):
    """A partition's generated images (one size) saved as one shard, loaded as an :class:`ImageBatch`.

    The folder holds ``images.safetensors`` (the tensor ``images``: uint8 ``[N, 3, H, W]``, RGB)
    and ``preview.png``, a grid of the first images for people and Kedro-Viz. A folder written
    before shards (``00000.png, 00001.png, ...``) loads as before, to the same pixels.
    """

    SHARD = "images.safetensors"
    PREVIEW = "preview.png"
    PREVIEW_IMAGES = 16  # two rows of eight

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _legacy_files(self) -> list[Path]:
        return sorted(self._filepath.glob("[0-9]*.png"))

    def load(self) -> ImageBatch:
        shard = self._filepath / self.SHARD
        if shard.is_file():
            return ImageBatch(load_file(str(shard))["images"])
        files = self._legacy_files()  # a partition saved as one PNG per image
        if not files:
            raise DatasetError(f"{self._filepath}: no generated images here.")
        images = []
        for file in files:
            with Image.open(file) as image:
                images.append(image.convert("RGB"))
        return ImageBatch.of(images)

    def save(self, data: Sequence[Image.Image]) -> None:
        batch = ImageBatch.of(data)
        if self._filepath.exists():
            shutil.rmtree(self._filepath)
        self._filepath.mkdir(parents=True)
        save_tensors({"images": batch.pixels}, self._filepath / self.SHARD,
                     metadata={"format": "tint-image-shard", "layout": "uint8 N,3,H,W RGB"})
        grid = make_grid(batch.pixels[:self.PREVIEW_IMAGES], nrow=8, padding=2, pad_value=255)
        Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(self._filepath / self.PREVIEW)

    def _exists(self) -> bool:
        return (self._filepath / self.SHARD).is_file() or bool(self._legacy_files())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
