"""Nodes of the ``generator`` pipeline: the offline default text-to-image model."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tint_distill.params import settings_from_params
from tint_distill.tint import TinySDConfig, build_tiny_stable_diffusion

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

logger = logging.getLogger(__name__)


def build_untrained_generator(architecture: dict, seed: int) -> StableDiffusionPipeline:
    """A small Stable-Diffusion-architecture model with seeded random weights and the real
    CLIP vocabulary (the catalog saves it as a diffusers folder)."""
    from diffusers import StableDiffusionPipeline  # heavy: imported only when the node runs

    config = settings_from_params(TinySDConfig, architecture, "generator.architecture")
    with tempfile.TemporaryDirectory(prefix="tiny-sd-") as scratch:
        folder = build_tiny_stable_diffusion(Path(scratch) / "model", config=config, seed=seed)
        pipeline = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    logger.info("Built an untrained %d px generator (seed %d)", config.resolution, seed)
    return pipeline
