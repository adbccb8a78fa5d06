"""What a user would try before a distilled student, scored on the task's held-out images: nearest
neighbour and nearest class mean on the teacher's features, and nearest neighbour on the raw pixels
at the student's input size (the one image policy, :mod:`tint_distill.data.model_input`). Each is
fitted on an episode's supports and predicts its queries, so it is paired per image with the
students and the teacher. Plain torch, no Kedro.

The supports-only student and the teacher (its prototypes) are baselines too; their predictions
come from the distillation stage (:data:`VERDICT_BASELINES`: what the exported student must beat by
default, ``task.baselines_to_beat``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd
import torch
import torch.nn.functional as F

from tint_distill.data.model_input import images_to_tensor
from tint_distill.keys import episode_key

NN_TEACHER_FEATURES = "nn_teacher_features"
NCM_TEACHER_FEATURES = "ncm_teacher_features"
NN_RAW_PIXELS = "nn_raw_pixels"
FEATURE_BASELINES = (NN_TEACHER_FEATURES, NCM_TEACHER_FEATURES, NN_RAW_PIXELS)  # computed here

# What each name stands for on the card.
DESCRIPTIONS = {
    "supports_only": "the supports-only student",
    NN_TEACHER_FEATURES: "nearest neighbour on the teacher's features",
    NCM_TEACHER_FEATURES: "nearest class mean on the teacher's features",
    NN_RAW_PIXELS: "nearest neighbour on raw pixels",
    "teacher": "the teacher's prototypes",
}
# What the exported student must beat to be registered (task.register: auto), by default. The teacher
# is the student's own soft-label source, a model many times its size: the card reports it, for reference.
VERDICT_BASELINES = ("supports_only", NN_TEACHER_FEATURES, NCM_TEACHER_FEATURES, NN_RAW_PIXELS)
BASELINES = (*VERDICT_BASELINES, "teacher")  # every name task.baselines_to_beat may hold


def nearest_neighbour(supports: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor,
                      cosine: bool) -> list[int]:
    """The label of each query's nearest support: by cosine similarity, or by Euclidean distance."""
    if cosine:
        similarity = F.normalize(queries.float(), dim=1) @ F.normalize(supports.float(), dim=1).T
        return labels[similarity.argmax(1)].tolist()
    return labels[torch.cdist(queries.float(), supports.float()).argmin(1)].tolist()


def nearest_class_mean(supports: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor) -> list[int]:
    """The class whose mean support is nearest to each query (Euclidean, features as they are: the
    teacher's own classifier is the cosine one, on normalised features)."""
    classes = labels.unique()
    means = torch.stack([supports[labels == c].float().mean(0) for c in classes])
    return classes[torch.cdist(queries.float(), means).argmin(1)].tolist()


def baseline_predictions(episodes: pd.DataFrame, features: Mapping[str, torch.Tensor],
                         pixels: Mapping[str, torch.Tensor]) -> dict[str, dict[str, list[int]]]:
    """Per episode with queries (``episode_0001``): each baseline's predicted label per query, in the
    episodes table's order of the queries (the students' and the teacher's), and the true ``labels``."""
    predictions = {}
    for episode, rows in episodes.groupby("episode", sort=True):
        supports, queries = rows[rows["role"] == "support"], rows[rows["role"] == "query"]
        if queries.empty:
            continue
        labels = torch.tensor(supports["label"].astype(int).tolist())

        def stacked(values: Mapping[str, torch.Tensor], ids: pd.Series) -> torch.Tensor:
            return torch.stack([values[i] for i in ids])

        support_features = stacked(features, supports["image_id"])
        query_features = stacked(features, queries["image_id"])
        support_pixels, query_pixels = stacked(pixels, supports["image_id"]), stacked(pixels, queries["image_id"])
        predictions[episode_key(int(episode))] = {
            NN_TEACHER_FEATURES: nearest_neighbour(support_features, labels, query_features, cosine=True),
            NCM_TEACHER_FEATURES: nearest_class_mean(support_features, labels, query_features),
            NN_RAW_PIXELS: nearest_neighbour(support_pixels, labels, query_pixels, cosine=False),
            "labels": queries["label"].astype(int).tolist(),
        }
    return predictions


def raw_pixels(load: Callable[[str], object], image_ids: list[str], image_size: int) -> dict[str, torch.Tensor]:
    """Each image as the student sees it (the one image policy at ``image_size``), flattened."""
    return {image_id: images_to_tensor([load(image_id)], image_size)[0].flatten() for image_id in image_ids}
