"""``student_pretraining``: the students' starting weights, trained on the base classes (cached)."""

from tint_distill.pipelines.student_pretraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
