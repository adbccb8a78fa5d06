"""``predict``: new images classified by the task's exported model."""

from tint_distill.pipelines.predict.pipeline import create_pipeline

__all__ = ["create_pipeline"]
