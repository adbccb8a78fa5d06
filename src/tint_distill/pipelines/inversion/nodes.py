"""Nodes of the ``inversion`` pipeline: one TINT specialisation per (episode, class)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.execution import ExecutionSettings, engine_for
from tint_distill.stages.inversion import InversionSettings, plan_specialisations, reconstruction_report
from tint_distill.work import Work


def specialise_classes(generator: Path, images: ImageCollection, episodes: pd.DataFrame, inversion: InversionSettings,
                       execution: ExecutionSettings) -> Work:
    """For every (episode, class): textual inversion of a new token, then null-text inversion of
    each support. The catalog computes and saves the classes still missing, ``inversion.group_size``
    at a time, here or on Ray workers (``execution``); a class whose optimisation diverges fails alone."""
    return plan_specialisations(generator, images, episodes, inversion, engine_for(execution, "inversion"))


def summarise_reconstructions(class_specialisations: dict) -> tuple[dict, dict]:
    """How faithfully the null-text inversion holds the supports: per (episode, class) the pixel MSE
    of the supports rebuilt from their inversion and the VAE round trip's (the bound), and the
    run's means. Returns the report and its MLflow metrics (``inversion.reconstruction_*``)."""
    return reconstruction_report(class_specialisations)
