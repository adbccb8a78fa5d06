"""A PNG image dataset that Kedro-Viz can preview."""

from __future__ import annotations

import base64

from kedro.io.core import get_filepath_str
from kedro_datasets._typing import ImagePreview
from kedro_datasets.partitions import PartitionedDataset
from kedro_datasets.pillow import ImageDataset


class PNGImageDataset(ImageDataset):
    """``pillow.ImageDataset`` plus ``preview()``, so the image shows in Kedro-Viz."""

    def preview(self) -> ImagePreview:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, mode="rb") as handle:
            return ImagePreview(base64.b64encode(handle.read()).decode("utf-8"))


class PNGFolderDataset(PartitionedDataset):
    """A folder of PNGs (one per partition) whose first image Kedro-Viz previews."""

    def preview(self) -> ImagePreview:
        paths = sorted(self._list_partitions())
        if not paths:
            raise FileNotFoundError(f"{self._path}: no images yet")
        with self._filesystem.open(paths[0], mode="rb") as handle:
            return ImagePreview(base64.b64encode(handle.read()).decode("utf-8"))
