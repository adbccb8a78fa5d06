"""Nodes of the ``inversion`` pipeline: one TINT specialisation per (episode, class)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import episode_images
from tint_distill.model_runtime import ModelOnDemand
from tint_distill.params import settings_from_params
from tint_distill.tint import (
    ClassSpecialisation,
    NonFiniteLossError,
    NullTextConfig,
    TextualInversionConfig,
    specialise_class,
)
from tint_distill.tint.imaging import to_model_tensor
from tint_distill.tint.specialisation import SPECIALISATION_VERSION
from tint_distill.work import Deferred, check_class_slugs, fingerprint, folder_fingerprint, partition_key, slug

logger = logging.getLogger(__name__)


class ClassSpecialisationError(RuntimeError):
    """Specialising one class of one episode failed; the message says which."""


@dataclass(frozen=True)
class InversionSettings:
    device: str = "auto"
    init_word_fallback: str = "object"
    textual_inversion: dict = field(default_factory=dict)
    null_text: dict = field(default_factory=dict)


def parse_settings(inversion: dict) -> tuple[InversionSettings, TextualInversionConfig, NullTextConfig]:
    """The ``inversion`` block as settings (errors name the parameter)."""
    settings = settings_from_params(InversionSettings, inversion, "inversion")
    ti_config = settings_from_params(TextualInversionConfig, settings.textual_inversion, "inversion.textual_inversion")
    nti_config = settings_from_params(NullTextConfig, settings.null_text, "inversion.null_text")
    return settings, ti_config, nti_config


def class_token(class_name: str) -> str:
    """The new token of a class: unique per class name (see :func:`tint_distill.work.slug`)."""
    return f"<{slug(class_name).lower()}>"


def _specialise(
    model: ModelOnDemand,
    images: ImageCollection,
    support_ids: list[str],
    episode: int,
    class_name: str,
    ti_config: TextualInversionConfig,
    nti_config: NullTextConfig,
    init_word_fallback: str,
) -> ClassSpecialisation:
    components = model.get()
    logger.info("Specialising episode %d, class '%s' on %d supports", episode, class_name, len(support_ids))
    pixels = to_model_tensor([images.load(i) for i in support_ids], components.resolution)
    try:
        spec = specialise_class(
            components,
            pixels,
            token=class_token(class_name),
            init_word=class_name.replace("_", " ").lower(),
            ti_config=ti_config,
            nti_config=nti_config,
            support_ids=support_ids,
            fallback_word=init_word_fallback,
            progress=True,
        )
    except NonFiniteLossError as error:
        raise ClassSpecialisationError(
            f"episode {episode}, class '{class_name}': {error}. Classes finished before this one are saved."
        ) from error
    spec.settings.update(episode=int(episode), class_name=class_name)
    return spec


def specialise_classes(
    generator: Path, images: ImageCollection, episodes: pd.DataFrame, inversion: dict
) -> dict[str, Deferred]:
    """For every (episode, class): textual inversion of a new token, then null-text inversion
    of each support. Returned lazily: the catalog computes and saves one class at a time and
    skips classes already done with the same model, support pixels, settings and algorithm."""
    settings, ti_config, nti_config = parse_settings(inversion)
    check_class_slugs(episodes["class_name"].unique())
    model = ModelOnDemand(generator, settings.device, "float32")  # optimisation stays in fp32
    model_key = folder_fingerprint(generator)
    work = {}
    for episode in sorted(episodes["episode"].unique()):
        for (_, class_name), support_ids in episode_images(episodes, episode, "support").items():
            key = fingerprint(
                SPECIALISATION_VERSION, model_key, class_name, support_ids, images.content_hashes(support_ids),
                dataclasses.asdict(ti_config), dataclasses.asdict(nti_config), settings.init_word_fallback,
            )
            work[partition_key(int(episode), class_name)] = Deferred(
                key,
                partial(
                    _specialise, model, images, support_ids, int(episode), class_name, ti_config, nti_config,
                    settings.init_word_fallback,
                ),
            )
    logger.info("%d class specialisations to provide", len(work))
    return work
