"""PNG images and folders of them that Kedro-Viz can preview."""

from __future__ import annotations

import base64
import io

from PIL import Image

from kedro.io.core import get_filepath_str
from kedro_datasets._typing import ImagePreview
from kedro_datasets.partitions import PartitionedDataset
from kedro_datasets.pillow import ImageDataset


def png_preview(png: bytes | Image.Image) -> ImagePreview:
    """A Kedro-Viz image preview of PNG bytes, or of an image encoded as PNG."""
    if isinstance(png, Image.Image):
        buffer = io.BytesIO()
        png.save(buffer, format="PNG")
        png = buffer.getvalue()
    return ImagePreview(base64.b64encode(png).decode("utf-8"))


class PNGImageDataset(ImageDataset):
    """``pillow.ImageDataset`` plus ``preview()``, so the image shows in Kedro-Viz."""

    def preview(self) -> ImagePreview:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, mode="rb") as handle:
            return png_preview(handle.read())


class PNGFolderDataset(PartitionedDataset):
    """A folder of PNGs (one per partition) whose first image Kedro-Viz previews."""

    def preview(self) -> ImagePreview:
        paths = sorted(self._list_partitions())
        if not paths:
            raise FileNotFoundError(f"{self._path}: no images yet")
        with self._filesystem.open(paths[0], mode="rb") as handle:
            return png_preview(handle.read())
