"""The default text-to-image generator."""

from tint_distill.pipelines.generator.pipeline import create_pipeline

__all__ = ["create_pipeline"]
