"""Pre-training the offline default generator on the base classes, and judging it.

A small Stable-Diffusion-architecture model (VAE, conditional UNet, CLIP text encoder with the
real CLIP vocabulary) is trained from scratch on the base classes only, with class-name
prompts, so that the offline default has a generator that knows the domain. It is cached:
training is a :class:`~tint_distill.work.Deferred` the catalog runs only when its data or
settings change, or when asked (``retrain: true``). Its quality is measured on every run.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.data.grids import image_grid
from tint_distill.params import ParameterError, Settings, resolve_device, settings_from_params
from tint_distill.pretraining.data import pixel_fingerprint, pretraining_split
from tint_distill.pretraining.quality import QualitySettings, assess_generator
from tint_distill.pretraining.trainer import OFFLINE_GENERATOR, PretrainingConfig, pretrain_generator
from tint_distill.tint import TinySDConfig, load_stable_diffusion
from tint_distill.tint.models import read_training_record
from tint_distill.fingerprints import fingerprint
from tint_distill.work import Deferred

logger = logging.getLogger(__name__)

STORAGE_DTYPE = torch.float16  # the weights are stored in half precision: half the folder size


@dataclass(frozen=True)
class PretrainingSettings(Settings):
    retrain: bool = False               # true: train again even if the saved model is up to date
    classes_from_split: str = "base"    # never the novel classes
    heldout_per_class: int = 4          # real images kept out of training, to judge the VAE and the classifier
    device: str = "auto"
    architecture: TinySDConfig = field(default_factory=lambda: OFFLINE_GENERATOR)
    training: dict = field(default_factory=dict)  # PretrainingConfig but its model and resolution (the architecture's)
    quality: QualitySettings = field(default_factory=QualitySettings)


def pretraining_settings(params: dict | PretrainingSettings) -> tuple[PretrainingSettings, PretrainingConfig,
                                                                     QualitySettings]:
    """The ``generator_pretraining`` block as its settings, the training recipe (with the
    architecture) and the quality settings (errors name the parameter)."""
    settings = settings_from_params(PretrainingSettings, params, "generator_pretraining")
    architecture = settings.architecture
    training = dict(settings.training)
    for reserved in ("model", "resolution"):
        if reserved in training:
            raise ParameterError(f"parameter 'generator_pretraining.training.{reserved}' is set by "
                                 "'generator_pretraining.architecture'; remove it.")
    config = settings_from_params(PretrainingConfig, {**training, "model": architecture,
                                                      "resolution": architecture.resolution},
                                  "generator_pretraining.training")
    return settings, config, settings.quality


def split_images(image_index: pd.DataFrame, settings: PretrainingSettings, config: PretrainingConfig) -> pd.DataFrame:
    """The images of the pre-training classes (the base split), each marked ``train`` or ``heldout``."""
    split = settings.classes_from_split
    classes = sorted(image_index.loc[image_index["split"] == split, "class_name"].astype(str).unique())
    if not classes:
        raise ParameterError(f"parameter 'generator_pretraining.classes_from_split' is '{split}', but the image "
                             "index has no class in that split; check data_episodes.class_splits.")
    try:
        table = pretraining_split(image_index, classes, settings.heldout_per_class, config.seed)
    except ValueError as error:
        raise ParameterError(f"generator_pretraining.heldout_per_class: {error}") from error
    logger.info("Generator pre-training on %d '%s' classes: %d training images, %d held out", len(classes), split,
                int((table["role"] == "train").sum()), int((table["role"] == "heldout").sum()))
    return table


def train_and_record(pictures: list[Image.Image], class_names: list[str], config: PretrainingConfig, device: str,
                     key: str, settings: dict, start_from: Path | None = None) -> tuple[Any, dict]:
    """Train a generator (from scratch, or fine-tuning the folder ``start_from``) and describe it:
    ``(pipeline, record)``, the record holding ``key`` as its fingerprint and ``settings``."""
    logger.info("Pre-training the generator on %d images (%d classes) from %s; progress is logged every %d steps",
                len(pictures), len(set(class_names)), start_from or "scratch", config.log_every)
    pipeline, history = pretrain_generator(pictures, class_names, config, progress=True,
                                           device=resolve_device(device), start_from=start_from)
    pipeline.to(dtype=STORAGE_DTYPE)  # loaders upcast to float32 on the CPU
    record = {
        "fingerprint": key,
        "settings": settings,
        "training_images": len(pictures),
        "storage_dtype": str(STORAGE_DTYPE).removeprefix("torch."),
        "history": history,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    return pipeline, record


def generator_training(raw_images: ImageCollection, pretraining_images: pd.DataFrame, settings: PretrainingSettings,
                       config: PretrainingConfig) -> Deferred:
    """Train the generator, lazily: the catalog trains only if the saved model's fingerprint
    (training pixels + architecture + training settings) differs, or if ``retrain`` is set."""
    train = pretraining_images[pretraining_images["role"] == "train"]
    pictures = [raw_images.load(i) for i in train["image_id"]]  # decoded once: fingerprinted, and trained on if needed
    class_names = list(train["class_name"])
    data_key = pixel_fingerprint(pictures)
    recipe = {"architecture": dataclasses.asdict(config.model),
              "training": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("model", "log_every")},
              "classes": sorted(train["class_name"].unique())}
    key = fingerprint(data_key, list(zip(train["image_id"], train["class_name"])), recipe)
    return Deferred(key, lambda: train_and_record(pictures, class_names, config, settings.device, key, recipe),
                    force=settings.retrain)


def assess(generator: Path, raw_images: ImageCollection, pretraining_images: pd.DataFrame,
           settings: PretrainingSettings, config: PretrainingConfig, quality: QualitySettings,
           backbone: Any, temperature: float) -> tuple[dict, Image.Image, Image.Image]:
    """Class fidelity (judged by ``backbone``, a teacher, at ``temperature``), held-out VAE error
    and references (see :func:`assess_generator`), a grid of samples per class and a grid of
    held-out images with their VAE reconstructions."""
    components = load_stable_diffusion(generator, device=resolve_device(settings.device))

    def images_by_class(role: str, limit: int | None = None) -> dict[str, list[Image.Image]]:
        rows = pretraining_images[pretraining_images["role"] == role]
        return {name: [raw_images.load(i) for i in group["image_id"].iloc[:limit]]
                for name, group in rows.groupby("class_name")}

    report, samples, reconstruction_rows = assess_generator(
        components, config.prompt_template, images_by_class("train", quality.prototypes_per_class),
        images_by_class("heldout"), backbone, temperature, quality)
    record = read_training_record(generator)
    report["training"] = {k: record.get("history", {}).get(k) for k in
                          ("vae_steps_done", "unet_steps_done", "vae_seconds", "unet_seconds", "total_seconds")}
    report["training"]["fingerprint"] = record.get("fingerprint")
    fidelity = report["class_fidelity"]
    logger.info("Generator class fidelity %.3f (chance %.3f); real held-out images at %d px: %.3f; held-out VAE "
                "MSE %.4f", fidelity["overall"], report["chance"], report["resolution"],
                report["real_heldout_accuracy"]["generator_resolution"], report["vae_mse_heldout"])
    cell = max(48, min(96, 2 * report["resolution"]))
    samples_grid = image_grid(
        [(f"{name} ({fidelity['per_class'][name]:.0%})", images) for name, images in samples.items()], cell_size=cell,
        title=f"'{config.prompt_template}': class fidelity {fidelity['overall']:.0%} (chance {report['chance']:.0%})")
    reconstruction_grid = image_grid(reconstruction_rows, cell_size=cell,
                                     title=f"held-out images and their VAE reconstructions (MSE "
                                           f"{report['vae_mse_heldout']:.4f})")
    return report, samples_grid, reconstruction_grid


def training_curves(generator: Path) -> Figure:
    """Loss per step of both pre-training stages (from the model's training record)."""
    history = read_training_record(generator).get("history", {})
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    axes = figure.subplots(1, 2)
    stages = (("vae_loss", "VAE (MSE + L1 + KL)"), ("unet_loss", "UNet (min-SNR-weighted noise MSE)"))
    for axis, (name, title) in zip(axes, stages):
        values = history.get(name) or []
        axis.plot(range(1, len(values) + 1), values, linewidth=0.6, alpha=0.5)
        if len(values) >= 50:
            window = max(10, len(values) // 50)
            smooth = pd.Series(values).rolling(window, min_periods=1).mean()
            axis.plot(range(1, len(values) + 1), smooth, linewidth=1.5, label=f"mean of {window} steps")
            axis.legend(loc="upper right")
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    if not history:
        figure.suptitle("no training record in the generator folder (not trained by this pipeline)")
    return figure


def quality_metrics(generator_quality: dict, generator: Path) -> dict:
    """``generator.*`` MLflow metrics: fidelity, chance, references, VAE error, loss curves."""
    metrics = {
        "generator.class_fidelity": {"value": generator_quality["class_fidelity"]["overall"], "step": 0},
        "generator.class_fidelity_chance": {"value": generator_quality["chance"], "step": 0},
        "generator.vae_mse_heldout": {"value": generator_quality["vae_mse_heldout"], "step": 0},
    }
    for name, value in generator_quality["real_heldout_accuracy"].items():
        metrics[f"generator.real_heldout_accuracy.{name}"] = {"value": value, "step": 0}
    history = read_training_record(generator).get("history", {})
    every = 10  # MLflow stores every 10th step of the curves: enough to see them, small to log
    for name in ("vae_loss", "unet_loss"):
        values = history.get(name) or []
        if values:
            metrics[f"generator.{name}"] = [{"value": float(sum(values[i:i + every]) / len(values[i:i + every])),
                                             "step": i + 1} for i in range(0, len(values), every)]
    return metrics
