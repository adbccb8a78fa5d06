"""Conversions between PIL images, model tensors in [-1, 1] and uint8 tensors."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from tint_distill.data.model_input import images_to_model_range


def to_model_tensor(images: Iterable[Image.Image], resolution: int) -> torch.Tensor:
    """Stack PIL images as a float tensor (K, 3, R, R) in [-1, 1] under the project's one image
    policy (:mod:`tint_distill.data.model_input`: padded to a square on white, bilinear)."""
    return images_to_model_range(list(images), resolution)


def resize(images: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resize a float batch (N, C, H, W) with antialiased bilinear interpolation."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 (N, 3, H, W) on the CPU."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """uint8 or [-1, 1] float images (N, 3, H, W) -> list of RGB PIL images."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    return [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
