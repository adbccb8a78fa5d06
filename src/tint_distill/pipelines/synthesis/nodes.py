"""Nodes of the ``synthesis`` pipeline: TINT images per (episode, class) and preview grids."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.execution import ExecutionSettings, engine_for
from tint_distill.methods import samplers_for
from tint_distill.model_runtime import DiffusionModel
from tint_distill.stages.synthesis import PreviewSettings, SynthesisSettings, plan_generation, preview_grids
from tint_distill.work import Work

logger = logging.getLogger(__name__)


def generate_synthetic_images(generator: Path, class_specialisations: dict, synthesis: SynthesisSettings,
                              execution: ExecutionSettings, methods: list[str] | None = None) -> Work:
    """M images per specialised class and sampler (keys ``<sampler>/episode_XXXX/<class>``), computed
    and saved one class at a time (here, or on Ray workers: ``execution``); those whose inputs did
    not change are kept. With ``methods`` (the ``task`` pipeline), only the samplers they train on."""
    if methods is not None:
        wanted = samplers_for(methods)
        synthesis = dataclasses.replace(synthesis, samplers=tuple(s for s in synthesis.samplers if s in wanted))
    return plan_generation(generator, class_specialisations, synthesis, engine_for(execution, "synthesis"))


def draw_synthesis_previews(generator: Path, images: ImageCollection, episodes: pd.DataFrame,
                            class_specialisations: dict, synthetic_images: dict, synthesis: SynthesisSettings,
                            synthesis_preview: PreviewSettings) -> dict[str, Image.Image]:
    """Per episode: a grid of each class's supports, its synthetic images per sampler, and the supports
    rebuilt from their null-text inversion (Kedro-Viz previews the first episode's)."""
    model = DiffusionModel.checked(generator, synthesis.device, synthesis.precision)
    return preview_grids(model, images, episodes, class_specialisations, synthetic_images, synthesis_preview)
