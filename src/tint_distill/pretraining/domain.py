"""A generator for a task's own domain, from the images the user has (the ``task`` pipeline).

A task folder's ``unlabeled/`` images (prompt: the domain words only, ``unlabeled_prompt``) and
``base/<class>/`` images of other labelled classes of the same domain (prompt: ``class_prompt``
with the class name) pre-train a small generator with the pre-training of
:mod:`tint_distill.pretraining.trainer`, fine-tuning the experiment's generator (its VAE, UNet and
text encoder) or training from scratch (``start_from``). TINT then specialises it to the task's
labelled classes with the same words (``class_prompt`` with the new token). The model is cached
by the fingerprint of its images, words, recipe and starting model: the catalog trains it only
when one of them changes. The labelled images of the task's own classes never train it: a
held-out image of a leave-out split must not reach the generator either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tint_distill.data.collection import ImageCollection
from tint_distill.fingerprints import fingerprint, folder_fingerprint
from tint_distill.params import ParameterError, Settings, settings_from_params
from tint_distill.pretraining.data import pixel_fingerprint
from tint_distill.pretraining.generator import train_and_record
from tint_distill.pretraining.trainer import PretrainingConfig
from tint_distill.tint.models import read_training_record
from tint_distill.work import Deferred, NoModel

logger = logging.getLogger(__name__)

# 1: fine-tuned or from scratch on unlabeled/ ("a photo") and base/<class>/ ("a photo of a <class>")
DOMAIN_GENERATOR_VERSION = 1
START_FROM = ("generator", "scratch")
_RESERVED = ("model", "resolution", "prompt_template")


@dataclass(frozen=True)
class DomainGeneratorSettings(Settings):
    """The ``task.domain_generator`` block: whether and how a task's own images pre-train its
    generator. ``training`` overrides :class:`~tint_distill.pretraining.trainer.PretrainingConfig`
    (steps, batch sizes, learning rates, time budgets in seconds)."""

    pretrain: bool = True                    # false: the experiment's generator as it is (conf/gpu: the SD folder)
    retrain: bool = False                    # true: train again even if the saved model is up to date
    class_prompt: str = "a photo of a {name}"   # base/<class> images; TINT's words for the task's classes ({name} -> token)
    unlabeled_prompt: str = "a photo"        # unlabeled/ images: the domain words alone
    start_from: str = "generator"            # generator: fine-tune the experiment's generator; scratch: random weights
    device: str = "auto"
    training: dict = field(default_factory=lambda: dict(
        vae_steps=150, vae_batch_size=32, vae_learning_rate=2.0e-3, vae_time_budget=60,
        unet_steps=400, unet_batch_size=32, unet_learning_rate=3.0e-4, text_encoder_learning_rate=3.0e-5,
        unet_time_budget=180, warmup_steps=20, latent_augmentations=4, log_every=50))

    def check(self) -> None:
        if "{name}" not in self.class_prompt:
            raise ValueError(f"class_prompt must contain '{{name}}': {self.class_prompt!r}")
        if "{" in self.unlabeled_prompt or not self.unlabeled_prompt.strip():
            raise ValueError(f"unlabeled_prompt must be plain words (the domain), got {self.unlabeled_prompt!r}")
        if self.start_from not in START_FROM:
            raise ValueError(f"start_from must be one of {list(START_FROM)}, got {self.start_from!r}")
        reserved = sorted(set(self.training) & set(_RESERVED))
        if reserved:
            raise ValueError(f"training cannot set {reserved}: the words are class_prompt and unlabeled_prompt, the "
                             "architecture and resolution the experiment generator's")

    @property
    def token_prompt(self) -> str:
        """TINT's prompt template for the task's classes: the class words with the learnt token."""
        return self.class_prompt.replace("{name}", "{token}")

    def prompt(self, class_name: str) -> str:
        """The words of a pre-training image: its class's, or the domain's alone (``""``: unlabeled)."""
        return self.class_prompt.format(name=class_name.replace("_", " ")) if class_name else self.unlabeled_prompt

    def config(self, resolution: int) -> PretrainingConfig:
        """The training recipe at ``resolution`` (the prompts are passed whole, as class names)."""
        return settings_from_params(PretrainingConfig, {**self.training, "resolution": resolution,
                                                        "prompt_template": "{name}"},
                                    "task.domain_generator.training")


def model_resolution(folder: str | Path) -> int:
    """The image side of a diffusers SD folder (UNet sample size x VAE scale factor), from its configs."""
    folder = Path(folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def plan_domain_generator(images: ImageCollection, image_ids: Sequence[str], class_names: Sequence[str],
                          generator: Path, settings: DomainGeneratorSettings) -> Deferred | NoModel:
    """The domain generator's training on ``image_ids`` (``class_names``: a base class, or ``""`` for
    an unlabeled image), lazily: the catalog trains it only when the saved model's fingerprint
    differs. A :class:`~tint_distill.work.NoModel` when there is nothing to train on or ``pretrain``
    is off: the task then uses the experiment's ``generator``."""
    if not settings.pretrain:
        return NoModel("task.domain_generator.pretrain is false")
    if not len(image_ids):
        return NoModel("the task folder has no unlabeled/ or base/ images")
    pictures = [images.load(i) for i in image_ids]  # decoded once: fingerprinted, and trained on if needed
    prompts = [settings.prompt(name) for name in class_names]
    try:
        config = settings.config(model_resolution(generator))
    except (OSError, KeyError, ValueError) as error:
        raise ParameterError(f"task.domain_generator: cannot read the resolution of {generator}: {error}") from error
    start = generator if settings.start_from == "generator" else None
    recipe = {"training": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("log_every",)},
              "start_from": folder_fingerprint(generator) if start else "scratch",
              "class_prompt": settings.class_prompt, "unlabeled_prompt": settings.unlabeled_prompt}
    key = fingerprint(DOMAIN_GENERATOR_VERSION, pixel_fingerprint(pictures), prompts, recipe)
    base_classes = sorted({name for name in class_names if name})
    logger.info("Domain generator: %d images (%d unlabeled, %d of %d base classes), fingerprint %s, starting from %s",
                len(pictures), sum(1 for n in class_names if not n), sum(1 for n in class_names if n),
                len(base_classes), key, start or "scratch")
    return Deferred(key, lambda: train_and_record(pictures, prompts, config, settings.device, key, recipe, start),
                    force=settings.retrain)


def describe_generator(generator: Path, domain_generator: Path | None, expected: str | None,
                       settings: DomainGeneratorSettings) -> dict[str, Any]:
    """What the task's model card says of its generator: the domain generator (how many images, how
    long, its fingerprint) when one was planned, else the experiment's, with what to add."""
    if expected is None:
        record = read_training_record(generator)
        words = record.get("settings", {}).get("training", {}).get("prompt_template")
        trained_on = record.get("training_images")
        what = (f"the experiment's generator {generator}" + (f", pre-trained on {trained_on} images with the words "
                                                               f"'{words}'" if trained_on else "")
                + ", not on your domain")
        advice = ("to pre-train a generator of your domain, add unlabeled images of it under unlabeled/ (any "
                  "sub-folders; a few hundred) and optionally other labelled classes of it under base/<class>/, "
                  "or use a real Stable Diffusion folder on a GPU (--env gpu --params sd_model_path=...)")
        if not settings.pretrain:
            advice = ("task.domain_generator.pretrain is false: set it to true to pre-train a generator of your "
                      "domain from unlabeled/ and base/ images")
        return {"kind": "experiment", "path": str(generator), "summary": what, "advice": advice,
                "training_images": trained_on, "words": words}
    record = read_training_record(domain_generator) if domain_generator is not None else {}
    if record.get("fingerprint") != expected:
        raise ValueError(f"the domain generator in {domain_generator} has fingerprint {record.get('fingerprint')}, "
                         f"not this run's {expected}")
    history = record.get("history", {})
    prompts = history.get("classes", [])
    seconds = history.get("total_seconds")
    started = history.get("started_from")
    start = "from scratch" if started == "scratch" else f"fine-tuning {started}"
    summary = (f"a domain generator pre-trained on {record.get('training_images')} of your images "
               f"({history.get('vae_steps_done')} VAE and {history.get('unet_steps_done')} UNet steps in "
               f"{seconds:.0f} s, {start}), fingerprint {expected}")
    return {"kind": "domain", "path": str(domain_generator), "summary": summary, "advice": None,
            "fingerprint": expected, "training_images": record.get("training_images"), "seconds": seconds,
            "started_from": history.get("started_from"), "prompts": prompts,
            "class_prompt": settings.class_prompt, "unlabeled_prompt": settings.unlabeled_prompt}
