"""Nodes of the ``data_episodes`` pipeline: image index, episodes, image check, support grids
(the work: :mod:`tint_distill.data.episodes`)."""

from __future__ import annotations

import pandas as pd
from PIL import Image

from tint_distill.data import episodes as core
from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import EpisodeSpec


def build_image_index(images: ImageCollection, class_splits: dict | None) -> pd.DataFrame:
    """Table of every image with its class and split (base / val / novel)."""
    return core.image_index(images, class_splits)


def sample_episode_table(image_index: pd.DataFrame, sampling: dict) -> pd.DataFrame:
    """Seeded N-way K-shot episodes with Q queries per class, as a table. (``sampling`` stays a
    mapping: a typed block would reach MLflow as one parameter, not one per setting.)"""
    return core.episode_table(image_index, EpisodeSpec.from_params(sampling))


def check_images(images: ImageCollection, image_index: pd.DataFrame, episodes: pd.DataFrame, scope: str,
                 min_side: int) -> dict:
    """Decode the images of ``scope`` (``all``, ``episodes`` or ``none``) fully; corrupt, truncated
    and too small images stop the run before any expensive stage."""
    return core.check_images(images, image_index, episodes, scope, min_side)


def draw_support_grids(images: ImageCollection, episodes: pd.DataFrame, n_episodes: int,
                       cell_size: int) -> dict[str, Image.Image]:
    """One PNG per episode (the first ``n_episodes``): a row of support images per class."""
    return core.support_grids(images, episodes, n_episodes, cell_size)
