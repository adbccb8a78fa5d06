"""The inversion stage: one TINT specialisation per (episode, class), classes grouped in UNet batches.

:func:`plan_specialisations` turns the episodes into :class:`~tint_distill.work.Work` (one unit
per class, keyed by everything its result depends on); :func:`specialise` is what a worker runs
for a group of classes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import images_by_episode

from tint_distill.fingerprints import fingerprint, folder_fingerprint
from tint_distill.keys import PartitionKey, check_class_slugs, slug
from tint_distill.model_runtime import DiffusionModel
from tint_distill.params import SettingError, Settings
from tint_distill.tint import ClassSpecialisation, ClassToSpecialise, NullTextConfig, TextualInversionConfig
from tint_distill.tint import specialise_group
from tint_distill.tint.imaging import to_model_tensor
from tint_distill.tint.models import PRECISIONS
from tint_distill.tint.specialisation import SPECIALISATION_VERSION
from tint_distill.work import Call, Engine, Stored, Unit, Work, Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InversionSettings(Settings):
    """The ``inversion`` parameter block."""

    device: str = "auto"
    precision: str = "fp32"        # fp32 | bf16 | fp16: what TI and NTI compute in (master copies stay fp32)
    group_size: int = 5            # classes specialised together, one UNet batch per step
    init_word_fallback: str = "object"
    textual_inversion: TextualInversionConfig = field(default_factory=TextualInversionConfig)
    null_text: NullTextConfig = field(default_factory=NullTextConfig)

    def check(self) -> None:
        SettingError.unless_one_of("precision", self.precision, PRECISIONS)
        if self.group_size < 1:
            raise SettingError("group_size", f"must be >= 1 (1: one class at a time), got {self.group_size}")


def class_token(class_name: str) -> str:
    """The new token of a class: unique per class name (see :func:`tint_distill.keys.slug`)."""
    return f"<{slug(class_name).lower()}>"


@dataclass(frozen=True)
class ClassTask:
    """One class of one episode to specialise."""

    episode: int
    class_name: str
    support_ids: tuple[str, ...]

    @property
    def token(self) -> str:
        return class_token(self.class_name)


def specialisation_key(model_key: str, task: ClassTask, images: ImageCollection, settings: InversionSettings) -> str:
    """Everything a specialisation depends on. The group a class is specialised in and the NTI batch
    size (memory knobs) change its result by rounding only: not part of the key."""
    return fingerprint(
        SPECIALISATION_VERSION, model_key, task.class_name, list(task.support_ids),
        images.content_hashes(task.support_ids), dataclasses.asdict(settings.textual_inversion),
        {**dataclasses.asdict(settings.null_text), "batch_size": None}, settings.init_word_fallback,
        *([settings.precision] if settings.precision != "fp32" else []),
    )


def plan_specialisations(generator: Path, images: ImageCollection, episodes: pd.DataFrame,
                         settings: InversionSettings, engine: Engine) -> Work:
    """A unit per (episode, class), computed ``settings.group_size`` classes at a time."""
    check_class_slugs(episodes["class_name"].unique())
    model = DiffusionModel.checked(generator, settings.device, settings.precision)
    model_key = folder_fingerprint(generator)
    units = []
    for episode, classes in images_by_episode(episodes, "support").items():
        for (_, class_name), support_ids in classes.items():
            task = ClassTask(episode, class_name, tuple(support_ids))
            units.append(Unit(PartitionKey.of(episode, class_name).format(),
                              specialisation_key(model_key, task, images, settings), task))
    logger.info("%d class specialisations to provide, %d at a time", len(units), settings.group_size)
    return Work.of(units, SpecialisationCall(model, images, settings), engine, group_size=settings.group_size,
                   apart=token_of)  # one token per class: one per group


def token_of(task: ClassTask) -> str:
    return task.token


@dataclass(frozen=True)
class SpecialisationCall:
    """Builds a group's :class:`Call` with its support images, read here on the driver."""

    model: DiffusionModel
    images: ImageCollection
    settings: InversionSettings

    def __call__(self, group: list[ClassTask]) -> Call:
        supports = [[self.images.load(i) for i in task.support_ids] for task in group]
        return Call(specialise, (self.model, self.settings, group, supports))


def specialise(worker: Worker, model: DiffusionModel, settings: InversionSettings, group: list[ClassTask],
               supports: list[list]) -> list[ClassSpecialisation | BaseException]:
    """Specialise a group of classes together; a class whose optimisation diverges is returned as
    its :class:`~tint_distill.errors.NonFiniteLossError`, naming the episode and class."""
    components = model.on(worker)
    logger.info("Specialising %s", ", ".join(f"episode {t.episode} class '{t.class_name}'" for t in group))
    classes = [ClassToSpecialise(to_model_tensor(pictures, components.resolution), token=t.token,
                                 init_word=t.class_name.replace("_", " ").lower(), support_ids=t.support_ids)
               for t, pictures in zip(group, supports)]
    results = specialise_group(components, classes, ti_config=settings.textual_inversion,
                               nti_config=settings.null_text, fallback_word=settings.init_word_fallback, progress=True)
    for task, result in zip(group, results):
        if isinstance(result, BaseException):
            result.add_note(f"in episode {task.episode}, class '{task.class_name}'")
        else:
            result.diagnostics.update(episode=int(task.episode), class_name=task.class_name)
    return results


def reconstruction_report(class_specialisations: Mapping[str, Stored]) -> tuple[dict, dict]:
    """How faithfully the null-text inversion holds the supports: per (episode, class) the pixel MSE
    of the supports rebuilt from their inversion and the VAE round trip's (the bound), and the
    run's means. Returns the report and its MLflow metrics (``inversion.reconstruction_*``).
    Reads each specialisation's JSON sidecar alone (``Stored.sidecar``), never its tensors."""
    per_class, missing = {}, []
    for key, stored in sorted(class_specialisations.items()):
        measured = stored.sidecar()["diagnostics"].get("reconstruction")
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
