"""Nodes of the ``data_episodes`` pipeline: image index, episodes, image check, support grids."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from tint_distill.data.collection import SPLITS, ImageCollection, check_decodable
from tint_distill.data.episodes import EpisodeSpec, assign_class_splits, episode_images, sample_episodes
from tint_distill.data.grids import image_grid
from tint_distill.params import SettingError, Settings, settings_from_params
from tint_distill.keys import check_class_slugs, episode_key

logger = logging.getLogger(__name__)

IMAGE_CHECK_SCOPES = ("all", "episodes", "none")


@dataclass(frozen=True)
class GridSettings(Settings):
    n_episodes: int = 3
    cell_size: int = 80


@dataclass(frozen=True)
class DataEpisodesSettings(Settings):
    class_splits: dict | None = None  # {base: [...], val: [...], novel: [...]}; null: the source's own split
    sampling: dict = field(default_factory=dict)  # tint_distill.data.episodes.EpisodeSpec
    image_check: str = "all"
    min_image_side: int = 8
    grids: dict = field(default_factory=dict)

    def check(self) -> None:
        SettingError.unless_one_of("image_check", self.image_check, IMAGE_CHECK_SCOPES)
        if self.min_image_side < 0:
            raise SettingError("min_image_side", f"must be >= 0, got {self.min_image_side}")
        for split, names in (self.class_splits or {}).items():
            if split not in SPLITS:
                raise SettingError("class_splits", f"has the unknown split {split!r}; use {list(SPLITS)}")
            if names is not None and not isinstance(names, (list, tuple)):
                raise SettingError(f"class_splits.{split}", f"must be a list of class names, got {names!r}")


def parse_settings(data_episodes: dict) -> DataEpisodesSettings:
    """The ``data_episodes`` block as settings (errors name the parameter)."""
    settings = settings_from_params(DataEpisodesSettings, data_episodes, "data_episodes")
    EpisodeSpec.from_params(settings.sampling)
    settings_from_params(GridSettings, settings.grids, "data_episodes.grids")
    return settings


def build_image_index(images: ImageCollection, class_splits: dict | None) -> pd.DataFrame:
    """Table of every image with its class and split (base / val / novel). Class names that
    would share a folder in the partitioned outputs are refused here, before any work."""
    check_class_slugs(images.index["class_name"].unique())
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


def check_images(
    images: ImageCollection, image_index: pd.DataFrame, episodes: pd.DataFrame, scope: str, min_side: int
) -> dict:
    """Decode images fully (catches corrupt or truncated files before any expensive stage).

    ``scope``: ``all`` images of the index, only those in the ``episodes``, or ``none``.
    Images whose shorter side is below ``min_side`` pixels (icons, tracking pixels) stop the run.
    """
    if scope not in IMAGE_CHECK_SCOPES:
        raise ValueError(f"parameter 'data_episodes.image_check' must be one of {list(IMAGE_CHECK_SCOPES)}, got {scope!r}.")
    ids = {"all": image_index["image_id"], "episodes": episodes["image_id"], "none": pd.Series([], dtype=str)}[scope]
    ids = sorted(set(ids))
    sizes = check_decodable(images, ids, min_side)
    widths, heights = zip(*sizes) if sizes else ((), ())
    report = {"scope": scope, "images_checked": len(ids), "min_side": min_side}
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
