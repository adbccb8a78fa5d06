"""Teacher soft labels and student distillation per (method, episode)."""

from tint_distill.pipelines.distillation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
