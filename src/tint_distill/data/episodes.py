"""Few-shot episodes as data: seeded, validated, saved as a table.

An episode is N classes with K support and Q query images each. Episode ``e`` is drawn
with its own numpy ``default_rng`` seeded by ``(seed, e)``, so episodes do not depend on how many
are drawn or in which order (they can be produced on different machines), and the same
seed and index give the same table byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from tint_distill.data.collection import SPLITS, ImageCollection, check_decodable
from tint_distill.data.grids import GridSettings
from tint_distill.params import ParameterError, SettingError, Settings, settings_from_params
from tint_distill.keys import check_class_slugs

logger = logging.getLogger(__name__)

EPISODE_COLUMNS = ["episode", "label", "class_name", "role", "position", "image_id"]


class EpisodeConfigError(ParameterError):
    """The episode settings cannot be satisfied by the data."""


@dataclass(frozen=True)
class EpisodeSpec(Settings):
    """The ``data_episodes.sampling`` block, what to sample: ``n_episodes`` episodes of ``n_way``
    classes from ``split``, each class with ``n_shot`` support and ``n_query`` query images."""

    n_way: int = 5
    n_shot: int = 5
    n_query: int = 15
    n_episodes: int = 10
    seed: int = 0
    split: str = "novel"

    def check(self) -> None:
        for key in ("n_way", "n_shot", "n_query", "n_episodes"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"must be a positive integer, got {getattr(self, key)!r}")
        SettingError.unless_one_of("split", self.split, SPLITS)

    @classmethod
    def from_params(cls, params: Mapping, name: str = "data_episodes.sampling") -> EpisodeSpec:
        try:
            return settings_from_params(cls, params, name)
        except ParameterError as error:
            if isinstance(error.__cause__, SettingError):
                raise EpisodeConfigError(str(error)) from error.__cause__
            raise


IMAGE_CHECK_SCOPES = ("all", "episodes", "none")


@dataclass(frozen=True)
class DataEpisodesSettings(Settings):
    """The ``data_episodes`` block."""

    class_splits: dict | None = None  # {base: [...], val: [...], novel: [...]}; null: the source's own split
    sampling: EpisodeSpec = field(default_factory=EpisodeSpec)
    image_check: str = "all"          # which images are decoded before any work: IMAGE_CHECK_SCOPES
    min_image_side: int = 8
    grids: GridSettings = field(default_factory=GridSettings)

    def check(self) -> None:
        SettingError.unless_one_of("image_check", self.image_check, IMAGE_CHECK_SCOPES)
        if self.min_image_side < 0:
            raise SettingError("min_image_side", f"must be >= 0, got {self.min_image_side}")
        for split, names in (self.class_splits or {}).items():
            if split not in SPLITS:
                raise SettingError("class_splits", f"has the unknown split {split!r}; use {list(SPLITS)}")
            if names is not None and not isinstance(names, (list, tuple)):
                raise SettingError(f"class_splits.{split}", f"must be a list of class names, got {names!r}")


def assign_class_splits(index: pd.DataFrame, class_splits: Mapping[str, Sequence[str]] | None) -> pd.DataFrame:
    """Fill the ``split`` column from configuration (``{base: [...], val: [...], novel: [...]}``).

    With no configuration the source's own split is kept (benchmarks define theirs). Every
    class must land in exactly one split, so that novel classes never leak into base-class
    training.
    """
    index = index.copy()
    if not class_splits:
        unsplit = sorted(index.loc[index["split"].isna(), "class_name"].unique())
        if unsplit:
            raise EpisodeConfigError(
                f"classes {unsplit[:5]}{'...' if len(unsplit) > 5 else ''} have no split: this data source defines "
                "none, so list every class under base/val/novel in 'data_episodes.class_splits'."
            )
        return index
    unknown_splits = sorted(set(class_splits) - set(SPLITS))
    if unknown_splits:
        raise EpisodeConfigError(f"'data_episodes.class_splits' has unknown splits {unknown_splits}; use {list(SPLITS)}.")
    split_of: dict[str, str] = {}
    for split, names in class_splits.items():
        for name in names or []:
            if name in split_of:
                raise EpisodeConfigError(
                    f"class '{name}' is listed under both '{split_of[name]}' and '{split}' in 'data_episodes.class_splits'."
                )
            split_of[name] = split
    present = set(index["class_name"])
    absent = sorted(set(split_of) - present)
    if absent:
        raise EpisodeConfigError(
            f"class '{absent[0]}' is listed in 'data_episodes.class_splits' but the data has no such class folder; "
            "fix the name or remove it from the list."
        )
    unlisted = sorted(present - set(split_of))
    if unlisted:
        example = index.loc[index["class_name"] == unlisted[0], "image_id"].iloc[0]
        folder = PurePosixPath(example).parent
        raise EpisodeConfigError(
            f"class '{unlisted[0]}' (folder '{folder}') is in no split: add it to base, val or novel in "
            "'data_episodes.class_splits', or move the folder out of the data."
        )
    index["split"] = index["class_name"].map(split_of)
    return index


def check_episode_feasibility(index: pd.DataFrame, spec: EpisodeSpec) -> list[str]:
    """Raise :class:`EpisodeConfigError` if ``spec`` cannot be sampled; return the split's classes."""
    in_split = index[index["split"] == spec.split]
    classes = sorted(in_split["class_name"].unique())
    if spec.n_way > len(classes):
        raise EpisodeConfigError(
            f"'data_episodes.sampling.n_way' is {spec.n_way} but split '{spec.split}' has only {len(classes)} classes; "
            f"lower n_way to at most {len(classes)} or add classes to that split."
        )
    needed = spec.n_shot + spec.n_query
    counts = in_split.groupby("class_name").size()
    short = counts[counts < needed].sort_values()
    if len(short):
        name, count = short.index[0], int(short.iloc[0])
        example = in_split.loc[in_split["class_name"] == name, "image_id"].iloc[0]
        raise EpisodeConfigError(
            f"class '{name}' (folder '{PurePosixPath(example).parent}') has {count} images but each episode needs "
            f"n_shot + n_query = {spec.n_shot} + {spec.n_query} = {needed}; add images to it, lower "
            f"'data_episodes.sampling.n_query', or move the class out of split '{spec.split}'"
            + (f" ({len(short) - 1} more classes are short)." if len(short) > 1 else ".")
        )
    return classes


def sample_episodes(index: pd.DataFrame, spec: EpisodeSpec) -> pd.DataFrame:
    """Sample the episodes table: one row per (episode, image), supports before queries."""
    classes = check_episode_feasibility(index, spec)
    in_split = index[index["split"] == spec.split]
    images_of = {name: sorted(group["image_id"]) for name, group in in_split.groupby("class_name")}
    rows = []
    for episode in range(spec.n_episodes):
        rng = np.random.default_rng([spec.seed, episode])
        chosen = rng.choice(len(classes), size=spec.n_way, replace=False)
        for label, class_position in enumerate(chosen):
            name = classes[class_position]
            ids = images_of[name]
            picked = rng.permutation(len(ids))[: spec.n_shot + spec.n_query]
            for position, image_position in enumerate(picked):
                role = "support" if position < spec.n_shot else "query"
                within_role = position if role == "support" else position - spec.n_shot
                rows.append((episode, label, name, role, within_role, ids[image_position]))
    return pd.DataFrame(rows, columns=EPISODE_COLUMNS)


def episode_images(episodes: pd.DataFrame, episode: int, role: str) -> dict[tuple[int, str], list[str]]:
    """``{(label, class_name): [image ids]}`` of one role in one episode, in table order."""
    part = episodes[(episodes["episode"] == episode) & (episodes["role"] == role)]
    return {key: group["image_id"].tolist() for key, group in part.groupby(["label", "class_name"], sort=True)}


def images_by_episode(episodes: pd.DataFrame, role: str) -> dict[int, dict[tuple[int, str], list[str]]]:
    """:func:`episode_images` of every episode, ``{episode: {(label, class_name): [image ids]}}``, in one
    pass over the table (not one per episode)."""
    part = episodes[episodes["role"] == role]
    found: dict[int, dict[tuple[int, str], list[str]]] = {}
    for (episode, label, name), group in part.groupby(["episode", "label", "class_name"], sort=True):
        found.setdefault(int(episode), {})[(label, name)] = group["image_id"].tolist()
    return found


def episode_classes(episodes: pd.DataFrame, episode: int) -> list[str]:
    """The class names of one episode in label order (a classifier's output order)."""
    rows = episodes[episodes["episode"] == episode]
    return rows[["label", "class_name"]].drop_duplicates().sort_values("label")["class_name"].tolist()


def image_index(images: ImageCollection, class_splits: Mapping[str, Sequence[str]] | None) -> pd.DataFrame:
    """Table of every image with its class and split (base / val / novel). Class names that
    would share a folder in the partitioned outputs are refused here, before any work."""
    check_class_slugs(images.index["class_name"].unique())
    index = assign_class_splits(images.index, class_splits)
    counts = index.groupby("split")["class_name"].nunique().to_dict()
    logger.info("%s: %d images, classes per split %s", images.description, len(index), counts)
    return index


def episode_table(index: pd.DataFrame, spec: EpisodeSpec) -> pd.DataFrame:
    """:func:`sample_episodes`, saying what was sampled."""
    episodes = sample_episodes(index, spec)
    logger.info("Sampled %d episodes: %d-way %d-shot, %d queries per class, split '%s', seed %d",
                spec.n_episodes, spec.n_way, spec.n_shot, spec.n_query, spec.split, spec.seed)
    return episodes


def check_images(images: ImageCollection, index: pd.DataFrame, episodes: pd.DataFrame, scope: str,
                 min_side: int) -> dict:
    """Decode images fully (catches corrupt or truncated files before any expensive stage):
    ``all`` images of the index, only those in the ``episodes``, or ``none``. Images whose
    shorter side is below ``min_side`` pixels (icons, tracking pixels) stop the run."""
    if scope not in IMAGE_CHECK_SCOPES:
        raise ValueError(f"parameter 'data_episodes.image_check' must be one of {list(IMAGE_CHECK_SCOPES)}, got {scope!r}.")
    ids = {"all": index["image_id"], "episodes": episodes["image_id"], "none": pd.Series([], dtype=str)}[scope]
    ids = sorted(set(ids))
    sizes = check_decodable(images, ids, min_side)
    widths, heights = zip(*sizes) if sizes else ((), ())
    report = {"scope": scope, "images_checked": len(ids), "min_side": min_side}
    if sizes:
        report.update(min_size=[min(widths), min(heights)], max_size=[max(widths), max(heights)])
    logger.info("Image check: %s", report)
    return report


def support_grids(images: ImageCollection, episodes: pd.DataFrame, n_episodes: int, cell_size: int) -> dict:
    """One image per episode (the first ``n_episodes``): a row of support images per class."""
    from tint_distill.data.grids import image_grid
    from tint_distill.keys import episode_key

    grids = {}
    for episode in sorted(episodes["episode"].unique())[:n_episodes]:
        rows = [(f"{label}: {name}", [images.load(i) for i in ids])
                for (label, name), ids in episode_images(episodes, episode, "support").items()]
        grids[episode_key(episode)] = image_grid(rows, cell_size=cell_size, title=f"episode {episode}: supports")
    return grids
