"""PNG images and folders of them that Kedro-Viz can preview."""

from __future__ import annotations

import base64
import io
import math

from PIL import Image

from kedro.io.core import get_filepath_str
from kedro_datasets._typing import ImagePreview
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.partitions import PartitionedDataset
from kedro_datasets.pillow import ImageDataset

from tint_distill.datasets.folder_size import FolderSize


# Kedro-Viz's "Expand preview" fits an image to the height of a box about 1330 x 840 px on a
# 1600 x 1000 window (1640 x 910 at 1920 x 1080) and crops what is wider. A preview is therefore
# at least this tall, enlarged by a whole factor with nearest-neighbour pixels (sharp, every
# pixel as it is, where a browser's smooth enlargement blurs it), and never wider than this
# aspect ratio (a wider image gets margins above and below instead of losing its sides).
PREVIEW_MIN_HEIGHT = 1000
PREVIEW_MAX_WIDTH = 4000
PREVIEW_MAX_ASPECT = 1.5


def preview_image(image: Image.Image) -> Image.Image:
    """``image`` as Kedro-Viz shows it sharp and uncropped when expanded (see ``PREVIEW_MIN_HEIGHT``)."""
    image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    width, height = image.size
    if width > PREVIEW_MAX_ASPECT * height:
        padded = Image.new(image.mode, (width, math.ceil(width / PREVIEW_MAX_ASPECT)), image.getpixel((0, 0)))
        padded.paste(image, (0, (padded.height - height) // 2))
        image, height = padded, padded.height
    factor = max(1, min(math.ceil(PREVIEW_MIN_HEIGHT / height), PREVIEW_MAX_WIDTH // width))
    return image.resize((width * factor, height * factor), Image.Resampling.NEAREST) if factor > 1 else image


def png_preview(png: bytes | Image.Image) -> ImagePreview:
    """A Kedro-Viz image preview of PNG bytes or of an image: :func:`preview_image` of it, as PNG."""
    image = Image.open(io.BytesIO(png)) if isinstance(png, bytes) else png
    buffer = io.BytesIO()
    preview_image(image).save(buffer, format="PNG", optimize=True)
    return ImagePreview(base64.b64encode(buffer.getvalue()).decode("utf-8"))


class PNGImageDataset(ImageDataset):
    """``pillow.ImageDataset`` plus ``preview()``, so the image shows in Kedro-Viz."""

    def preview(self) -> ImagePreview:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, mode="rb") as handle:
            return png_preview(handle.read())


class PNGFolderDataset(FolderSize, PartitionedDataset):
    """A folder of PNGs (one per partition) whose first image Kedro-Viz previews."""

    def preview(self) -> ImagePreview:
        paths = sorted(self._list_partitions())
        if not paths:
            raise FileNotFoundError(f"{self._path}: no images yet")
        with self._filesystem.open(paths[0], mode="rb") as handle:
            return png_preview(handle.read())


class MatplotlibPNGDataset(MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` (one figure, saved as PNG) whose Kedro-Viz preview stays
    sharp and uncropped when expanded (:func:`preview_image`), as the project's other images."""

    def preview(self) -> ImagePreview:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, mode="rb") as handle:
            return png_preview(handle.read())
