"""Nodes of the ``data_episodes`` pipeline: image index, episodes, image check, support grids."""

from __future__ import annotations

import logging

import pandas as pd
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import EpisodeSpec, assign_class_splits, episode_images, sample_episodes
from tint_distill.data.grids import image_grid
from tint_distill.work import episode_key

logger = logging.getLogger(__name__)

IMAGE_CHECK_SCOPES = ("all", "episodes", "none")


def build_image_index(images: ImageCollection, class_splits: dict | None) -> pd.DataFrame:
    """Table of every image with its class and split (base / val / novel)."""
    index = assign_class_splits(images.index, class_splits)
    counts = index.groupby("split")["class_name"].nunique().to_dict()
    logger.info("%s: %d images, classes per split %s", images.description, len(index), counts)
    return index


def sample_episode_table(image_index: pd.DataFrame, sampling: dict) -> pd.DataFrame:
    """Seeded N-way K-shot episodes with Q queries per class, as a table."""
    spec = EpisodeSpec.from_params(sampling)
    episodes = sample_episodes(image_index, spec)
    logger.info(
        "Sampled %d episodes: %d-way %d-shot, %d queries per class, split '%s', seed %d",
        spec.n_episodes, spec.n_way, spec.n_shot, spec.n_query, spec.split, spec.seed,
    )
    return episodes


def check_images(images: ImageCollection, image_index: pd.DataFrame, episodes: pd.DataFrame, scope: str) -> dict:
    """Decode images fully (catches corrupt or truncated files before any expensive stage).

    ``scope``: ``all`` images of the index, only those in the ``episodes``, or ``none``.
    """
    if scope not in IMAGE_CHECK_SCOPES:
        raise ValueError(f"parameter 'data_episodes.image_check' must be one of {list(IMAGE_CHECK_SCOPES)}, got {scope!r}.")
    ids = {"all": image_index["image_id"], "episodes": episodes["image_id"], "none": pd.Series([], dtype=str)}[scope]
    ids = sorted(set(ids))
    sizes = []
    for done, image_id in enumerate(ids, start=1):
        sizes.append(images.load(image_id).size)
        if done % 500 == 0:
            logger.info("Checked %d / %d images", done, len(ids))
    widths, heights = zip(*sizes) if sizes else ((), ())
    report = {"scope": scope, "images_checked": len(ids)}
    if sizes:
        report.update(min_size=[min(widths), min(heights)], max_size=[max(widths), max(heights)])
    logger.info("Image check: %s", report)
    return report


def draw_support_grids(images: ImageCollection, episodes: pd.DataFrame, n_episodes: int, cell_size: int) -> dict[str, Image.Image]:
    """One PNG per episode (the first ``n_episodes``): a row of support images per class."""
    grids = {}
    for episode in sorted(episodes["episode"].unique())[:n_episodes]:
        rows = [
            (f"{label}: {name}", [images.load(i) for i in ids])
            for (label, name), ids in episode_images(episodes, episode, "support").items()
        ]
        grids[episode_key(episode)] = image_grid(rows, cell_size=cell_size, title=f"episode {episode}: supports")
    return grids
