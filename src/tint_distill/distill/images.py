"""Turning PIL images (or image tensors) into fixed-size float batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

Images = Sequence[Image.Image] | torch.Tensor
"""A list of PIL images, or a tensor ``[N, 3, H, W]`` (uint8 0-255, or float in [0, 1])."""


def _image_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be [3, H, W], got shape {tuple(image.shape)}")
        return TF.to_dtype(image, torch.float32, scale=True) if image.dtype == torch.uint8 else image.float()
    raise TypeError(f"expected a PIL image or a [3, H, W] tensor, got {type(image).__name__}")


def images_to_tensor(
    images: Images, size: int, interpolation: InterpolationMode = InterpolationMode.BICUBIC
) -> torch.Tensor:
    """Resize every image to ``size x size`` (the whole image, no crop) and stack: ``[N, 3, S, S]``
    float in [0, 1]. Bicubic with antialiasing, clamped to [0, 1]."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        batch = TF.to_dtype(images, torch.float32, scale=True) if images.dtype == torch.uint8 else images.float()
        if batch.shape[-2:] != (size, size):
            batch = TF.resize(batch, [size, size], interpolation=interpolation, antialias=True)
        return batch.clamp_(0.0, 1.0)
    if len(images) == 0:
        return torch.empty(0, 3, size, size)
    resized = []
    for image in images:
        tensor = _image_tensor(image)
        if tensor.shape[-2:] != (size, size):
            tensor = TF.resize(tensor, [size, size], interpolation=interpolation, antialias=True)
        resized.append(tensor)
    return torch.stack(resized).clamp_(0.0, 1.0)


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a ``[N, 3, H, W]`` batch."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - mean_t) / std_t
