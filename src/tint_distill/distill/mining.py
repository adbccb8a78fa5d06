"""Mining real images for a class: the candidates nearest to its supports in a feature space.

The paper's strongest baseline draws real images from the generator's own training data; here
the candidates are the base split's images (what the embedded generator was trained on), ranked
by their cosine similarity to the nearest support in the teacher's feature space. Plain PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_to_supports(support_features: torch.Tensor, candidate_features: torch.Tensor,
                        count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` candidates most similar to any support: ``(indices, similarities)``, most
    similar first (ties: the lower index first).

    ``support_features`` is ``[K, D]``, ``candidate_features`` ``[N, D]``; similarity is the
    cosine similarity to the nearest of the K supports.
    """
    if support_features.dim() != 2 or candidate_features.dim() != 2:
        raise ValueError("features must be [count, dim] matrices")
    if support_features.shape[1] != candidate_features.shape[1]:
        raise ValueError(f"supports have {support_features.shape[1]}-d features, candidates "
                         f"{candidate_features.shape[1]}-d: they come from different backbones")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    similarity = F.normalize(candidate_features.float(), dim=1) @ F.normalize(support_features.float(), dim=1).T
    nearest = similarity.max(dim=1).values
    index = torch.sort(nearest, descending=True, stable=True).indices[:count]
    return index, nearest[index]
