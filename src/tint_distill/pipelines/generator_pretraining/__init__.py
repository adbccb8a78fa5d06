"""Pre-training the default generator on the base classes, and judging it."""

from tint_distill.pipelines.generator_pretraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
