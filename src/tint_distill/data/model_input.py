"""The one image policy of every model input: generator pre-training, inversion, synthesis,
teacher, student and the exported classifier all see an image the same way.

An image is flattened to RGB on white (transparent drawings), padded to a square on white with
the image centred, then resized to the model's side (bilinear, antialiased). Padding keeps the
drawing's proportions: drawings are far from square (a fish of 128 x 49 px), and stretching one
to a square shows the models shapes that no real image has. White is the background of the
embedded drawings and the colour transparency is flattened onto; the photo benchmarks are square
already (miniImageNet, CIFAR-FS) or have a background that padding leaves as it is (CUB).

Plain PIL and torch, no Kedro.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .image_batch import ImageBatch
from .images import flatten_to_rgb

BACKGROUND = (255, 255, 255)
# Bumped whenever the policy changes what a model sees (1: stretched to a square; 2: padded on
# white): results computed from model inputs carry it in their fingerprints.
MODEL_INPUT_VERSION = 2
INPUT_POLICY = ("RGB (transparency on white), padded to a square on white with the image centred, resized to "
                "image_size x image_size (bilinear, antialiased), float32 in [0, 1]")

Images = Sequence[Image.Image] | torch.Tensor
"""A list of PIL images, an :class:`ImageBatch` (its uint8 pixels are used as they are), or a
tensor ``[N, 3, H, W]`` (uint8 0-255, or float in [0, 1])."""


def square_image(image: Image.Image) -> Image.Image:
    """The image as RGB on white, padded to a square on white with the image centred."""
    rgb = flatten_to_rgb(image)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    if rgb.width == rgb.height:
        return rgb
    side = max(rgb.size)
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return canvas


def _square_tensor(image: torch.Tensor) -> torch.Tensor:
    """A float (3, H, W) image in [0, 1] padded to a square with white, centred like :func:`square_image`."""
    height, width = image.shape[-2:]
    if height == width:
        return image
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    return TF.pad(image, [left, top, side - width - left, side - height - top], fill=1.0)


def _as_float(image: Image.Image | torch.Tensor) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return TF.to_dtype(TF.pil_to_tensor(square_image(image)), torch.float32, scale=True)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be [3, H, W], got shape {tuple(image.shape)}")
        tensor = TF.to_dtype(image, torch.float32, scale=True) if image.dtype == torch.uint8 else image.float()
        return _square_tensor(tensor)
    raise TypeError(f"expected a PIL image or a [3, H, W] tensor, got {type(image).__name__}")


def _resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(batch.shape[-2:]) == (size, size):
        return batch
    return TF.resize(batch, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def images_to_tensor(images: Images, size: int) -> torch.Tensor:
    """Every image under the policy, stacked: ``[N, 3, size, size]`` float in [0, 1]."""
    if isinstance(images, ImageBatch):
        images = images.pixels
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        batch = TF.to_dtype(images, torch.float32, scale=True) if images.dtype == torch.uint8 else images.float()
        if batch.shape[-2] != batch.shape[-1]:
            batch = torch.stack([_square_tensor(image) for image in batch])
        return _resize(batch, size).clamp_(0.0, 1.0)
    if len(images) == 0:
        return torch.empty(0, 3, size, size)
    return torch.cat([_resize(_as_float(image).unsqueeze(0), size) for image in images]).clamp_(0.0, 1.0)


def images_to_model_range(images: Images, size: int) -> torch.Tensor:
    """The same batch in [-1, 1], the range the diffusion model works in."""
    if not isinstance(images, torch.Tensor) and len(images) == 0:
        raise ValueError("no images given")
    return images_to_tensor(images, size) * 2.0 - 1.0
