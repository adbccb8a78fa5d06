"""Project hooks: the run's checks and lock (:class:`RunGuard`), node clocks and parameter logging
(:class:`NodeClock`, :class:`PlainParameters`), and the MLflow run's story (:class:`MlflowRunStory`)."""

from tint_distill.hooks.mlflow_story import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MlflowRunStory
from tint_distill.hooks.nodes import NodeClock, PlainParameters
from tint_distill.hooks.run_guard import RUN_LOCK, STARTUP_LOCK, RunGuard

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "RUN_LOCK", "STARTUP_LOCK", "MlflowRunStory", "NodeClock",
           "PlainParameters", "RunGuard"]
