"""Nodes of the ``evaluation`` pipeline: per-episode accuracies, confidence intervals, paired
comparisons, the episode planner, speed, plots and MLflow metrics. The work is done by
:mod:`tint_distill.evaluation`."""

from __future__ import annotations

import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.datasets.mlflow_models import LoggableModel
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings, create_teacher
from tint_distill.evaluation import packaging, scoring
from tint_distill.evaluation.packaging import LoggedModelSettings
from tint_distill.evaluation.reports import (  # noqa: F401 (nodes)
    plot_accuracy, plot_cost_plan, plot_speed_accuracy, results_table,
)
from tint_distill.evaluation.scoring import EvaluationSettings, PlannerSettings
from tint_distill.evaluation.speed import SpeedSettings, measure_speed as measure
from tint_distill.planning import unit_costs


def collect_episode_accuracies(student_results: dict, teacher_outputs: dict) -> pd.DataFrame:
    """One row per (method, episode): accuracy on the queries and what the student saw."""
    return scoring.episode_accuracy_table(student_results, teacher_outputs)


def measure_speed(teacher: TeacherSettings, student: StudentSettings, distillation: DistillationConfig, n_way: int,
                  speed: SpeedSettings) -> dict:
    """Parameters and CPU inference throughput (images/s) of the teacher and the student."""
    return measure(create_teacher(teacher), student.name, n_way, distillation.image_size, speed)


def collect_unit_costs(class_specialisations: dict, synthetic_images: dict, teacher_outputs: dict,
                       student_results: dict) -> pd.DataFrame:
    """Each unit of work of this run's episodes: stage, partition, episode, seconds, device, host."""
    return unit_costs({"class_specialisations": class_specialisations, "synthetic_images": synthetic_images,
                       "teacher_outputs": teacher_outputs, "student_results": student_results})


def summarise(episode_accuracies: pd.DataFrame, speed: dict, unit_costs: pd.DataFrame, comparisons: list[list[str]],
              planner: PlannerSettings, inversion_report: dict | None = None,
              student_results: dict | None = None) -> dict:
    """Mean accuracy and 95% CI per method, paired differences, the episode planner and its cost
    plan, speed, how faithfully the null-text inversion rebuilds the supports, and the synthetic
    images generated and kept per partition."""
    return scoring.summarise(episode_accuracies, speed, unit_costs, comparisons, planner, inversion_report,
                             student_results)


def package_logged_student(episode_accuracies: pd.DataFrame, student_results: dict, episodes: pd.DataFrame,
                           images: ImageCollection, logged_model: LoggedModelSettings) -> LoggableModel | None:
    """One student of the run as an MLflow model (ONNX, with signature and a support image as input
    example): by default the ``tint`` student of the episode with the median accuracy."""
    package = packaging.package_logged_student(episode_accuracies, student_results, episodes, images.load,
                                               logged_model)
    return None if package is None else LoggableModel.from_onnx(**package.arguments())


def mlflow_metrics(summary: dict, student_results: dict, log_episode_loss_curves: bool) -> dict:
    """Accuracies, CIs, paired differences and the cost plan as MLflow metrics, with the mean and
    standard deviation of each method's training-loss curve (each student's own only on request)."""
    return {**scoring.summary_metrics(summary), **scoring.loss_curves(student_results, log_episode_loss_curves)}
