"""Nodes of the ``generator_pretraining`` pipeline: the offline default generator trained on the
base classes (cached) and judged on every run; the work: :mod:`tint_distill.pretraining.generator`.

"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.distill.teacher import TeacherSettings, create_teacher
from tint_distill.pretraining import generator as core
from tint_distill.pretraining.generator import PretrainingSettings, pretraining_settings
from tint_distill.work import Deferred


def split_pretraining_images(image_index: pd.DataFrame, generator_pretraining: PretrainingSettings) -> pd.DataFrame:
    """The images of the pre-training classes (the base split), each marked ``train`` or ``heldout``."""
    settings, config, _ = pretraining_settings(generator_pretraining)
    return core.split_images(image_index, settings, config)


def pretrain_domain_generator(raw_images: ImageCollection, pretraining_images: pd.DataFrame,
                              generator_pretraining: PretrainingSettings) -> Deferred:
    """Train the generator, lazily: the catalog trains only if the saved model's fingerprint
    (training pixels + architecture + training settings) differs, or if ``retrain`` is set."""
    settings, config, _ = pretraining_settings(generator_pretraining)
    return core.generator_training(raw_images, pretraining_images, settings, config)


def assess_domain_generator(generator: Path, raw_images: ImageCollection, pretraining_images: pd.DataFrame,
                            generator_pretraining: PretrainingSettings,
                            teacher: TeacherSettings) -> tuple[dict, Image.Image, Image.Image]:
    """Class fidelity, held-out VAE error and references, a grid of samples per class and a grid
    of held-out images with their VAE reconstructions."""
    settings, config, quality = pretraining_settings(generator_pretraining)
    return core.assess(generator, raw_images, pretraining_images, settings, config, quality,
                       create_teacher(teacher), teacher.temperature)


def plot_pretraining_curves(generator: Path) -> Figure:
    """Loss per step of both pre-training stages (from the model's training record)."""
    return core.training_curves(generator)


def generator_metrics(generator_quality: dict, generator: Path) -> dict:
    """``generator.*`` MLflow metrics: fidelity, chance, references, VAE error, loss curves."""
    return core.quality_metrics(generator_quality, generator)

