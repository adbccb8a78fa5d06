"""Classifier inputs: the project's one image policy (:mod:`tint_distill.data.model_input`) and
the per-channel normalisation of a backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tint_distill.data.model_input import Images, images_to_tensor

__all__ = ["Images", "images_to_tensor", "normalise"]


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a ``[N, 3, H, W]`` batch."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - mean_t) / std_t
