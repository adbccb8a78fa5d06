"""Nodes of the ``inversion`` pipeline: one TINT specialisation per (episode, class)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.execution import ExecutionSettings, engine_for
from tint_distill.stages.inversion import InversionSettings, plan_specialisations
from tint_distill.work import Work

logger = logging.getLogger(__name__)


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
