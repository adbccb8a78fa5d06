"""Accuracy with confidence intervals, paired comparisons, episode planner, speed."""

from tint_distill.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
