"""TINT specialisation of the diffusion model to each (episode, class)."""

from tint_distill.pipelines.inversion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
