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
from tint_distill.execution import execution_engine
from tint_distill.model_runtime import DiffusionModel
from tint_distill.params import SettingError, Settings, settings_from_params
from tint_distill.tint import (
    ClassSpecialisation,
    ClassToSpecialise,
    NonFiniteLossError,
    NullTextConfig,
    TextualInversionConfig,
    specialise_group,
)
from tint_distill.tint.imaging import to_model_tensor
from tint_distill.tint.models import PRECISIONS
from tint_distill.tint.specialisation import SPECIALISATION_VERSION
from tint_distill.work import (Call, Deferred, UnitFailed, Worker, check_class_slugs, fingerprint, folder_fingerprint,
                               partition_key, slug)

logger = logging.getLogger(__name__)


class ClassSpecialisationError(UnitFailed):
    """Specialising one class of one episode failed; the message says which."""


@dataclass(frozen=True)
class InversionSettings(Settings):
    device: str = "auto"
    precision: str = "fp32"        # fp32 | bf16 | fp16: what TI and NTI compute in (master copies stay fp32)
    group_size: int = 5            # classes specialised together, one UNet batch per step
    init_word_fallback: str = "object"
    textual_inversion: dict = field(default_factory=dict)
    null_text: dict = field(default_factory=dict)

    def check(self) -> None:
        SettingError.unless_one_of("precision", self.precision, PRECISIONS)
        if self.group_size < 1:
            raise SettingError("group_size", f"must be >= 1 (1: one class at a time), got {self.group_size}")


def parse_settings(inversion: dict) -> tuple[InversionSettings, TextualInversionConfig, NullTextConfig]:
    """The ``inversion`` block as settings (errors name the parameter)."""
    settings = settings_from_params(InversionSettings, inversion, "inversion")
    ti_config = settings_from_params(TextualInversionConfig, settings.textual_inversion, "inversion.textual_inversion")
    nti_config = settings_from_params(NullTextConfig, settings.null_text, "inversion.null_text")
    return settings, ti_config, nti_config


def class_token(class_name: str) -> str:
    """The new token of a class: unique per class name (see :func:`tint_distill.work.slug`)."""
    return f"<{slug(class_name).lower()}>"


@dataclass(frozen=True)
class _ClassWork:
    episode: int
    class_name: str
    support_ids: tuple[str, ...]


def _specialisation_call(model: DiffusionModel, images: ImageCollection, settings: InversionSettings,
                         ti_config: TextualInversionConfig, nti_config: NullTextConfig,
                         group: list[_ClassWork]) -> Call:
    """The group's work with its support images, ready to run in any worker."""
    supports = [[images.load(i) for i in work.support_ids] for work in group]
    return Call(_specialise, (model, settings, ti_config, nti_config, group, supports))


def _specialise(worker: Worker, model: DiffusionModel, settings: InversionSettings, ti_config: TextualInversionConfig,
                nti_config: NullTextConfig, group: list[_ClassWork],
                supports: list[list]) -> list[ClassSpecialisation | ClassSpecialisationError]:
    """Specialise a group of classes together; a class that fails is returned as its error."""
    components = model.on(worker)
    logger.info("Specialising %s", ", ".join(f"episode {w.episode} class '{w.class_name}'" for w in group))
    classes = [
        ClassToSpecialise(to_model_tensor(pictures, components.resolution),
                          token=class_token(w.class_name), init_word=w.class_name.replace("_", " ").lower(),
                          support_ids=w.support_ids)
        for w, pictures in zip(group, supports)
    ]
    results = specialise_group(components, classes, ti_config=ti_config, nti_config=nti_config,
                               fallback_word=settings.init_word_fallback, progress=True)
    out: list[ClassSpecialisation | ClassSpecialisationError] = []
    for work, result in zip(group, results):
        if isinstance(result, NonFiniteLossError):
            error = ClassSpecialisationError(f"episode {work.episode}, class '{work.class_name}': {result}")
            error.__cause__ = result
            out.append(error)
        else:
            result.settings.update(episode=int(work.episode), class_name=work.class_name)
            out.append(result)
    return out


def _token_of(work: _ClassWork) -> str:
    return class_token(work.class_name)


def specialise_classes(
    generator: Path, images: ImageCollection, episodes: pd.DataFrame, inversion: dict, execution: dict | None = None
) -> dict[str, Deferred]:
    """For every (episode, class): textual inversion of a new token, then null-text inversion
    of each support. Returned lazily: the catalog computes and saves the classes still missing,
    ``inversion.group_size`` at a time, and skips classes already done with the same model,
    support pixels, settings, precision and algorithm. A class whose optimisation diverges fails
    alone: the others are saved. Where groups run: ``execution`` (this process, or Ray workers)."""
    settings, ti_config, nti_config = parse_settings(inversion)
    check_class_slugs(episodes["class_name"].unique())
    model = DiffusionModel.checked(generator, settings.device, settings.precision)
    model_key = folder_fingerprint(generator)
    pool = execution_engine(execution, "inversion").pool(
        partial(_specialisation_call, model, images, settings, ti_config, nti_config), settings.group_size,
        apart=_token_of)  # one token per class: one per group
    work = {}
    for episode in sorted(episodes["episode"].unique()):
        for (_, class_name), support_ids in episode_images(episodes, episode, "support").items():
            # the group a class is specialised in and the NTI batch size (memory knobs) change its result
            # by rounding only: not part of the key
            key = fingerprint(
                SPECIALISATION_VERSION, model_key, class_name, support_ids, images.content_hashes(support_ids),
                dataclasses.asdict(ti_config), {**dataclasses.asdict(nti_config), "batch_size": None},
                settings.init_word_fallback,
                *([settings.precision] if settings.precision != "fp32" else []),
            )
            work[partition_key(int(episode), class_name)] = pool.deferred(
                _ClassWork(int(episode), class_name, tuple(support_ids)), key)
    logger.info("%d class specialisations to provide, %d at a time", len(work), settings.group_size)
    return work


def summarise_reconstructions(class_specialisations: dict) -> tuple[dict, dict]:
    """How faithfully the null-text inversion holds the supports: per (episode, class) the pixel MSE
    of the supports rebuilt from their inversion and the VAE round trip's (the bound), and the
    run's means. Returns the report and its MLflow metrics (``inversion.reconstruction_*``)."""
    per_class, missing = {}, []
    for key, load in sorted(class_specialisations.items()):
        measured = load().reconstruction
        if measured is None:
            missing.append(key)
            continue
        per_class[key] = {name: measured[name] for name in ("mse", "vae_mse", "ratio")}
    if not per_class:
        return {"classes": {}, "unmeasured": missing}, {}
    ratios = [c["ratio"] for c in per_class.values()]
    mse = sum(c["mse"] for c in per_class.values()) / len(per_class)
    vae_mse = sum(c["vae_mse"] for c in per_class.values()) / len(per_class)
    summary = {"mse_mean": mse, "vae_mse_mean": vae_mse, "ratio_of_means": mse / vae_mse,
               "ratio_max": max(ratios), "classes": len(per_class), "unmeasured": len(missing)}
    worst = max(per_class, key=lambda k: per_class[k]["ratio"])
    logger.info("Null-text inversion rebuilds the supports with pixel MSE %.4f, %.2fx the VAE round trip's %.4f "
                "(worst: %s, %.2fx)", mse, mse / vae_mse, vae_mse, worst, per_class[worst]["ratio"])
    metrics = {f"inversion.reconstruction_{name}": {"value": float(summary[name]), "step": 0}
               for name in ("mse_mean", "vae_mse_mean", "ratio_of_means", "ratio_max")}
    return {"summary": summary, "classes": per_class, "unmeasured": missing}, metrics
