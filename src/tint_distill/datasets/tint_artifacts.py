"""Catalog datasets for TINT's artefacts: the generator folder, class specialisations and
folders of generated images."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from PIL import Image

from tint_distill.tint import ClassSpecialisation, check_model_folder, load_specialisation, save_specialisation


class DiffusersModelDataset(AbstractDataset[Any, Path]):
    """A Stable Diffusion 1.x diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ...).

    ``load()`` checks the folder and returns its path (nodes load the weights on the device
    and precision their parameters ask for). ``save()`` takes a diffusers pipeline
    (``save_pretrained``) or the path of a folder to copy in, and replaces the folder
    atomically. ``read_only: true`` protects a user's own model folder.
    """

    def __init__(self, *, path: str, read_only: bool = False, metadata: dict | None = None):
        self._path = Path(path)
        self._read_only = read_only
        self.metadata = metadata

    def load(self) -> Path:
        return check_model_folder(self._path)

    def save(self, data: Any) -> None:
        if self._read_only:
            raise DatasetError(
                f"{self._path} is a read-only model folder in this environment; run the pipelines that "
                "use it (--pipeline experiment or tint) rather than the generator pipeline that would overwrite it."
            )
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._path.name}-", dir=self._path.parent))
        try:
            if hasattr(data, "save_pretrained"):
                data.save_pretrained(staging)
            else:
                shutil.copytree(Path(data), staging, dirs_exist_ok=True)
            check_model_folder(staging)
            if self._path.exists():
                shutil.rmtree(self._path)
            staging.rename(self._path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _exists(self) -> bool:
        return (self._path / "model_index.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "read_only": self._read_only}


class SpecialisationDataset(AbstractDataset[ClassSpecialisation, ClassSpecialisation]):
    """One class specialisation: ``<name>.safetensors`` (tensors) + ``<name>.json`` (the rest). No pickle."""

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> ClassSpecialisation:
        return load_specialisation(self._filepath)

    def save(self, data: ClassSpecialisation) -> None:
        save_specialisation(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file() and self._filepath.with_suffix(".json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ImageSetDataset(AbstractDataset[list, list]):
    """A folder of PNGs ``00000.png, 00001.png, ...`` saved from and loaded as a list of images."""

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> list[Image.Image]:
        files = sorted(self._filepath.glob("*.png"))
        if not files:
            raise DatasetError(f"{self._filepath}: no generated images here.")
        images = []
        for file in files:
            with Image.open(file) as image:
                images.append(image.convert("RGB"))
        return images

    def save(self, data: list[Image.Image]) -> None:
        if self._filepath.exists():
            shutil.rmtree(self._filepath)
        self._filepath.mkdir(parents=True)
        for index, image in enumerate(data):
            image.save(self._filepath / f"{index:05d}.png")

    def _exists(self) -> bool:
        return any(self._filepath.glob("*.png"))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
