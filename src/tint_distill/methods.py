"""The methods compared: each trains the same student the same way, on different data.

- ``supports_only``: cross-entropy on the supports;
- ``textual_inversion``: + KD on textual-inversion-only synthetic images;
- ``tint``: + KD on TINT synthetic images;
- ``real_unlabeled``: + KD on real images of the episode's classes (never its supports or
  queries): the upper bound that synthetic data tries to approach;
- ``mined_real``: + KD on real images of other classes (the base split, what the generator was
  trained on) nearest to each class's supports in the teacher's feature space: the paper's
  baseline of images mined from the generator's own training data instead of generated.

A method is one :class:`Method` in :data:`REGISTRY` (as timm's model registry): for an episode,
its ``images`` function gives the images it distils on (besides the supports), the class each
stands for and their fingerprint *together*, so what the teacher labels and what its cached
outputs are keyed on cannot disagree. Adding a method is one :func:`register` call (see
ARCHITECTURE.md). In the ``task`` pipeline, the user's unlabeled images join every method that
distils, with the class -1 (unknown); experiments have none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.data.image_batch import ImageBatch
from tint_distill.keys import PartitionKey
from tint_distill.params import ParameterError, SettingError, Settings

SAMPLERS = ("tint", "textual_inversion")  # the synthesis samplers; a method may train on one of them


@dataclass(frozen=True)
class RealUnlabeledSettings(Settings):
    """The ``real_unlabeled`` block: how many real images per class the upper-bound method uses."""

    images_per_class: int = 20
    seed: int = 0


@dataclass(frozen=True)
class MinedRealSettings(Settings):
    """The ``mined_real`` block: the images mined from the generator's own training classes."""

    images_per_class: int | None = None  # null: the synthetic volume (synthesis.images_per_class)
    split: str = "base"                  # where candidates come from: the generator's training classes

    def check(self) -> None:
        if self.images_per_class is not None and self.images_per_class < 1:
            raise SettingError("images_per_class", f"must be >= 1 or null, got {self.images_per_class}")


@dataclass(frozen=True)
class EpisodeInputs:
    """What a method may read to choose an episode's images."""

    images: ImageCollection
    episodes: pd.DataFrame
    image_index: pd.DataFrame
    episode: int
    synthetic_images: Mapping[str, Any]  # {partition key: Stored}: the synthesis stage's, if any
    real_unlabeled: RealUnlabeledSettings
    mined: pd.DataFrame | None = None    # the mine_real_images table, if any

    @property
    def classes(self) -> list[tuple[int, str]]:
        """``(label, class name)`` of the episode, by label."""
        rows = self.episodes[self.episodes["episode"] == self.episode]
        return [(int(label), name) for label, name in
                rows[["label", "class_name"]].drop_duplicates().sort_values("label").itertuples(index=False)]


@dataclass(frozen=True)
class DistilledImages:
    """A method's images for one episode: ``load() -> (images, label of the class each stands for)``
    and ``key``, a JSON-able identity of exactly those images (ids and pixels, or upstream fingerprints)."""

    load: Callable[[], tuple[Sequence, list[int]]]  # a list of PIL images or an ImageBatch
    key: Any


@dataclass(frozen=True)
class Method:
    """One method of the comparison. ``images`` (None: the supports only) gives its images for an
    episode; ``sampler`` is the synthesis sampler it needs, if any. ``legacy_slot`` places its key
    where teacher fingerprints had it before methods were a registry (so finished work stays
    valid); a new method leaves it None."""

    name: str
    summary: str
    images: Callable[[EpisodeInputs], DistilledImages] | None = None
    sampler: str | None = None
    legacy_slot: str | None = None


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method (reported after those registered before it)."""
    if method.name in REGISTRY:
        raise ValueError(f"method '{method.name}' is already registered")
    if method.sampler is not None and method.sampler not in SAMPLERS:
        raise ValueError(f"method '{method.name}': sampler must be one of {list(SAMPLERS)}")
    REGISTRY[method.name] = method
    return method


def _synthetic(sampler: str) -> Callable[[EpisodeInputs], DistilledImages]:
    def images(inputs: EpisodeInputs) -> DistilledImages:
        keys = [(label, name, PartitionKey.of(inputs.episode, name, sampler).format()) for label, name in inputs.classes]

        def load() -> tuple[ImageBatch, list[int]]:  # the classes' shards as one uint8 batch, no PIL
            parts, labels = [], []
            for label, name, key in keys:
                if key not in inputs.synthetic_images:
                    raise KeyError(f"no '{sampler}' synthetic images for episode {inputs.episode}, class '{name}' "
                                   f"({key}): run the synthesis pipeline with this sampler.")
                generated = ImageBatch.of(inputs.synthetic_images[key]())
                parts.append(generated)
                labels += [label] * len(generated)
            return ImageBatch.join(parts), labels

        return DistilledImages(load, [(key, getattr(inputs.synthetic_images.get(key), "fingerprint", None))
                                      for _, _, key in keys])

    return images


def real_unlabeled_ids(image_index: pd.DataFrame, episodes: pd.DataFrame, episode: int,
                       settings: RealUnlabeledSettings) -> dict[int, list[str]]:
    """Per label, up to ``images_per_class`` real images of that class that the episode does not use."""
    rows = episodes[episodes["episode"] == episode]
    used = set(rows["image_id"])
    chosen = {}
    for label, name in rows[["label", "class_name"]].drop_duplicates().itertuples(index=False):
        pool = sorted(set(image_index.loc[image_index["class_name"] == name, "image_id"]) - used)
        rng = np.random.default_rng([settings.seed, int(episode), int(label)])
        picked = rng.permutation(len(pool))[: settings.images_per_class]
        chosen[int(label)] = [pool[i] for i in sorted(picked)]
    return chosen


def _real_unlabeled(inputs: EpisodeInputs) -> DistilledImages:
    chosen = real_unlabeled_ids(inputs.image_index, inputs.episodes, inputs.episode, inputs.real_unlabeled)
    ids = [i for label in sorted(chosen) for i in chosen[label]]
    labels = [label for label in sorted(chosen) for _ in chosen[label]]
    return DistilledImages(lambda: ([inputs.images.load(i) for i in ids], labels),
                           {label: list(zip(ids_, inputs.images.content_hashes(ids_))) for label, ids_ in chosen.items()})


def mined_rows(mined: pd.DataFrame | None, episode: int) -> pd.DataFrame:
    """The mined images of an episode (``mine_real_images``), by label then rank."""
    rows = None if mined is None else mined[mined["episode"].astype(int) == int(episode)]
    if rows is None or rows.empty:
        raise KeyError(f"no mined real images for episode {episode}: run the distillation pipeline's "
                       "mine_real_images node with 'mined_real' in 'methods'.")
    return rows.sort_values(["label", "rank"])


def _mined_real(inputs: EpisodeInputs) -> DistilledImages:
    chosen = mined_rows(inputs.mined, inputs.episode)
    ids, labels = chosen["image_id"].tolist(), chosen["label"].astype(int).tolist()
    return DistilledImages(lambda: ([inputs.images.load(i) for i in ids], labels),
                           list(zip(labels, ids, inputs.images.content_hashes(ids))))


register(Method("supports_only", "cross-entropy on the supports"))
register(Method("textual_inversion", "+ KD on textual-inversion-only synthetic images",
                _synthetic("textual_inversion"), sampler="textual_inversion", legacy_slot="synthetic"))
register(Method("tint", "+ KD on TINT synthetic images", _synthetic("tint"), sampler="tint", legacy_slot="synthetic"))
register(Method("real_unlabeled", "+ KD on real unused images of the episode's classes (the upper bound)",
                _real_unlabeled, legacy_slot="real"))
register(Method("mined_real", "+ KD on base-split images nearest to the supports (mined, not generated)",
                _mined_real, legacy_slot="mined"))


def methods_key(inputs: EpisodeInputs, methods: Sequence[Method], extra: Sequence[tuple[str, str]]) -> list:
    """The fingerprint parts of what ``methods`` distil on in one episode, plus the task's unlabeled
    images (``extra``: ids and content hashes), in the layout teacher fingerprints had before methods
    were a registry (finished teacher outputs stay valid); a method without a legacy slot adds
    ``(name, key)`` at the end."""
    keys = {m.name: m.images(inputs).key for m in methods if m.images is not None}
    slot = {m.name: m.legacy_slot for m in methods}
    upstream = sorted(part for name, key in keys.items() if slot[name] == "synthetic" for part in key)
    real = next((key for name, key in keys.items() if slot[name] == "real"), None)
    mined = next((key for name, key in keys.items() if slot[name] == "mined"), None)
    others = [(name, key) for name, key in keys.items() if slot[name] is None]
    return [upstream, real, *([list(extra)] if extra else []), *([mined] if mined else []), *others]


def parse_methods(methods: Iterable[str]) -> list[str]:
    """The ``methods`` parameter, in the canonical order."""
    if not isinstance(methods, (list, tuple)) or not methods or sorted(set(methods) - set(REGISTRY)):
        raise ParameterError(f"parameter 'methods' must be a non-empty subset of {list(REGISTRY)}, got {methods!r}.")
    return [m for m in REGISTRY if m in methods]


def methods_named(methods: Iterable[str]) -> list[Method]:
    """The registry entries of ``methods`` (checked), in the canonical order."""
    return [REGISTRY[name] for name in parse_methods(list(methods))]


def samplers_for(methods: Iterable[str]) -> list[str]:
    """The synthesis samplers ``methods`` train on."""
    return [m.sampler for m in methods_named(methods) if m.sampler]


def check_kept_methods(keep_weights: Iterable[str]) -> None:
    """``student.keep_weights`` names methods."""
    if sorted(set(keep_weights) - set(REGISTRY)):
        raise ParameterError(f"parameter 'student.keep_weights' must be a list of methods of {list(REGISTRY)}, "
                             f"got {list(keep_weights)!r}.")


METHODS: tuple[str, ...] = tuple(REGISTRY)  # the registered methods' names, in the order results are reported
