"""Few-shot episodes as data."""

from tint_distill.pipelines.data_episodes.pipeline import create_pipeline

__all__ = ["create_pipeline"]
