"""Synthetic images from the class specialisations."""

from tint_distill.pipelines.synthesis.pipeline import create_pipeline

__all__ = ["create_pipeline"]
