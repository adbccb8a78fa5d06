"""Which synthetic images a student trains on: those the teacher assigns to the class they were
generated for, with enough confidence, and that are not near-blank (as DISEF filters with CLIP,
and the reference pipeline's unreleased ``DinoGenerator`` rejected examples with a strong model).

The synthesis stage generates ``oversample`` x ``images_per_class`` images per class; the teacher,
which labels every synthetic image anyway, marks those to keep: the first that pass, in generation
order, at most ``images_per_class`` per class. Images are independent draws (one seeded generator
per image), so the first that pass are a fair sample of all that pass, not the most typical ones.
The default (``oversample: 1``, no threshold) keeps every image. Plain PyTorch, no Kedro.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tint_distill.params import SettingError, Settings, as_plain


@dataclass(frozen=True)
class SyntheticFilterSettings(Settings):
    """The ``synthesis.filter`` block."""

    oversample: float = 1.0               # images generated per class: oversample x images_per_class
    min_confidence: float | None = None   # keep an image when the teacher's top class is its intended one with
                                          # at least this probability (softmax of its logits); null: not asked
    min_pixel_std: float | None = None    # drop near-blank images: pixel standard deviation (0-255) below this

    def check(self) -> None:
        if self.oversample < 1:
            raise SettingError("oversample", f"must be >= 1 (1: generate images_per_class), got {self.oversample}")
        if self.min_confidence is not None and not 0 <= self.min_confidence < 1:
            raise SettingError("min_confidence", f"must be in [0, 1) or null, got {self.min_confidence}")
        if self.min_pixel_std is not None and self.min_pixel_std < 0:
            raise SettingError("min_pixel_std", f"must be >= 0 or null, got {self.min_pixel_std}")

    @property
    def active(self) -> bool:
        """Whether the filter can change what a student trains on (off: today's images and keys)."""
        return self.oversample != 1 or self.min_confidence is not None or self.min_pixel_std is not None

    def generated(self, images_per_class: int) -> int:
        """How many images the synthesis stage makes per class."""
        return math.ceil(round(images_per_class * self.oversample, 6))

    def key(self, images_per_class: int) -> dict:
        """What the kept images depend on besides the teacher's logits, for fingerprints."""
        return {"filter": as_plain(self), "images_per_class": int(images_per_class)}


def pixel_std(images: Sequence) -> torch.Tensor:
    """Each image's pixel standard deviation (0-255, over its channels): near 0 for a blank image.
    ``images``: an :class:`~tint_distill.data.image_batch.ImageBatch` or PIL images."""
    pixels = getattr(images, "pixels", None)
    if pixels is not None:
        return pixels.flatten(1).float().std(dim=1, unbiased=False)
    return torch.tensor([float(np.asarray(image.convert("RGB"), dtype=np.float32).std()) for image in images])


def passing_mask(logits: torch.Tensor, intended: torch.Tensor, images: Sequence,
                 settings: SyntheticFilterSettings) -> torch.Tensor:
    """Which images pass every threshold (bool ``[N]``): the teacher's top class is the intended one
    with at least ``min_confidence``, and the pixels vary by at least ``min_pixel_std``. An image whose
    intended class is negative (the task's unlabeled real images: no class) always passes."""
    intended = torch.as_tensor(intended, dtype=torch.long)
    passing = torch.ones(len(intended), dtype=torch.bool)
    if settings.min_confidence is not None:
        probabilities = torch.softmax(logits.float(), dim=1)
        own = probabilities.gather(1, intended.clamp(min=0).unsqueeze(1)).squeeze(1)
        passing &= (probabilities.argmax(1) == intended) & (own >= settings.min_confidence)
    if settings.min_pixel_std is not None:
        passing &= pixel_std(images) >= settings.min_pixel_std
    return passing | (intended < 0)


def keep_mask(passing: torch.Tensor, intended: torch.Tensor, images_per_class: int) -> torch.Tensor:
    """Which images to keep (bool ``[N]``): per intended class, the first passing ones in order, at most
    ``images_per_class``; an image of no class (negative) is always kept."""
    intended = torch.as_tensor(intended, dtype=torch.long)
    keep = intended < 0
    for label in intended[intended >= 0].unique().tolist():
        keep[torch.nonzero(passing & (intended == label)).squeeze(1)[:images_per_class]] = True
    return keep


def kept_counts(intended: torch.Tensor, keep: torch.Tensor | None,
                passing: torch.Tensor | None = None) -> dict[int, dict[str, int]]:
    """Per intended class (labels >= 0): how many were ``generated``, ``passed`` the thresholds (with
    a mask) and were ``kept``; everything is kept without a mask."""
    intended = torch.as_tensor(intended, dtype=torch.long)
    keep = torch.ones(len(intended), dtype=torch.bool) if keep is None else keep.bool()
    counts = {}
    for label in intended[intended >= 0].unique().tolist():
        mine = intended == label
        counts[int(label)] = {"generated": int(mine.sum()),
                              **({"passed": int((passing.bool() & mine).sum())} if passing is not None else {}),
                              "kept": int((keep & mine).sum())}
    return counts
