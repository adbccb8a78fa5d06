"""Images of one size held as one uint8 tensor: what the synthesis stage makes, stores as one shard
and hands to the teacher and the students.

An :class:`ImageBatch` is a ``Sequence`` of PIL images for code that shows images (preview grids):
an item is made from the tensor in memory, nothing is decoded. Model inputs
(:func:`tint_distill.data.model_input.images_to_tensor`) take its ``pixels`` as they are, so the
teacher and the students never go through PIL. Plain PyTorch and PIL, no Kedro.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, overload

import numpy as np
import torch
from PIL import Image


class ImageBatch(Sequence[Image.Image]):
    """``pixels``: uint8 ``[N, 3, H, W]`` (RGB). Indexing gives a PIL image, slicing an ImageBatch;
    ``+`` joins two batches of one size into one batch, and anything else into a list of PIL images."""

    def __init__(self, pixels: torch.Tensor):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"an ImageBatch holds uint8 [N, 3, H, W] pixels, got {pixels.dtype} {tuple(pixels.shape)}")
        self.pixels = pixels

    @classmethod
    def of(cls, images: Iterable[Image.Image]) -> ImageBatch:
        """The images (RGB, all of one size) as one batch; an ImageBatch is returned as it is."""
        if isinstance(images, ImageBatch):
            return images
        arrays = [np.asarray(image.convert("RGB")) for image in images]
        if not arrays:
            raise ValueError("an ImageBatch needs at least one image")
        sizes = sorted({array.shape[:2] for array in arrays})
        if len(sizes) > 1:
            raise ValueError(f"the images of an ImageBatch must have one size, got (height, width) {sizes}")
        return cls(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())

    @staticmethod
    def join(parts: Sequence[ImageBatch]) -> ImageBatch:
        """The batches one after the other (they must have one image size)."""
        return ImageBatch(torch.cat([part.pixels for part in parts]))

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> ImageBatch: ...

    def __getitem__(self, index: int | slice) -> Image.Image | ImageBatch:
        if isinstance(index, slice):
            return ImageBatch(self.pixels[index])
        return Image.fromarray(self.pixels[index].permute(1, 2, 0).contiguous().numpy())

    def __add__(self, other: Any) -> ImageBatch | list:
        if isinstance(other, ImageBatch) and other.pixels.shape[1:] == self.pixels.shape[1:]:
            return ImageBatch.join([self, other])
        if not isinstance(other, Sequence):
            return NotImplemented
        return self if len(other) == 0 else [*self, *other]

    def __radd__(self, other: Any) -> ImageBatch | list:
        if not isinstance(other, Sequence):
            return NotImplemented
        return self if len(other) == 0 else [*other, *self]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageBatch) and torch.equal(self.pixels, other.pixels)

    __hash__ = None  # mutable tensor inside: not hashable, as a list

    def __repr__(self) -> str:
        n, _, height, width = self.pixels.shape
        return f"ImageBatch({n} images of {width}x{height})"
