"""Nodes of the ``task`` pipeline: a user's own classes in, a tiny deployable classifier out.

``prepare_task`` turns the task folder into an episodes table (the final training set and the
k-fold splits, :mod:`tint_distill.data.task`); the TINT and distillation stages then run on it
unchanged (with the supports-only student always among the students: a baseline); the nodes
below score the other baselines, estimate the accuracy and say whether the exported student beats
them, export the final student (ONNX, safetensors), measure it, write its model card and hand it
to MLflow, registered when it beats the baselines (``task.register``) (:mod:`tint_distill.evaluation`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

from tint_distill.data import task as tasks
from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import episode_classes
from tint_distill.data.task import FINAL_EPISODE, TaskSettings
from tint_distill.datasets.mlflow_models import LoggableModel
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.distill.student import StudentSettings
from tint_distill.evaluation import baselines, packaging, reports, scoring
from tint_distill.evaluation.scoring import task_metrics  # noqa: F401 (a node)
from tint_distill.evaluation.speed import deployed_speed
from tint_distill.keys import episode_key
from tint_distill.pretraining import domain
from tint_distill.stages.inversion import InversionSettings
from tint_distill.stages.synthesis import SynthesisSettings
from tint_distill.work import Deferred, NoModel

logger = logging.getLogger(__name__)


def prepare_task(images: ImageCollection, task: TaskSettings, student: StudentSettings,
                 min_image_side: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The task's image index, episodes table and description, after every image has been decoded."""
    return tasks.prepare_task(images, task, student.keep_weights, min_image_side)


def pretrain_domain_generator(images: ImageCollection, index: pd.DataFrame, generator: Path,
                              task: TaskSettings) -> tuple[Deferred | NoModel, dict]:
    """The task's own generator, pre-trained on its unlabeled/ and base/ images (lazily: the catalog
    trains it only when its fingerprint changes), and the plan: ``{"fingerprint": ..., "none_because":
    None}``, or ``{"fingerprint": None, "none_because": why}`` (a :class:`NoModel`) without such
    images or with ``task.domain_generator.pretrain`` off."""
    rows = tasks.domain_images(index)
    model = domain.plan_domain_generator(images, rows["image_id"].tolist(), rows["class_name"].tolist(), generator,
                                         task.domain_generator)
    if isinstance(model, NoModel):
        logger.info("Domain generator: none (%s): the task uses %s", model.why, generator)
        return model, {"fingerprint": None, "none_because": model.why}
    return model, {"fingerprint": model.fingerprint, "none_because": None}


def choose_generator(generator: Path, domain_generator: Path | None, plan: dict, task: TaskSettings,
                     inversion: InversionSettings) -> tuple[Path, InversionSettings, dict]:
    """The generator the task's specialisations use, their settings (the domain generator's words)
    and what the model card says of it."""
    description = domain.describe_generator(generator, domain_generator, plan["fingerprint"], task.domain_generator)
    logger.info("Task generator: %s", description["summary"])
    if description["advice"]:
        logger.warning("Task generator: %s", description["advice"])
    if plan["fingerprint"] is None:
        return generator, inversion, description
    words = dataclasses.replace(inversion.textual_inversion, prompt_template=task.domain_generator.token_prompt)
    return domain_generator, dataclasses.replace(inversion, textual_inversion=words), description


def trained_methods(task: TaskSettings) -> list[str]:
    """The students trained on every split: the task's methods and the supports-only baseline."""
    return task.trained_methods()


def score_baselines(images: ImageCollection, episodes: pd.DataFrame, teacher: TeacherSettings,
                    distillation: DistillationConfig) -> dict:
    """Nearest neighbour and nearest class mean on the teacher's features, and nearest neighbour on
    the raw pixels at the student's input size, fitted on each episode's supports and scored on its
    queries (each image embedded once)."""
    from tint_distill.distill.teacher import extract_features, load_teacher

    ids = sorted(episodes["image_id"].unique())
    features = extract_features(load_teacher(teacher), [images.load(i) for i in ids], teacher.batch_size)
    pixels = baselines.raw_pixels(images.load, ids, distillation.image_size)
    return baselines.baseline_predictions(episodes, dict(zip(ids, features)), pixels)


def estimate_accuracy(episodes: pd.DataFrame, student_results: dict, teacher_outputs: dict,
                      baseline_predictions: dict, task: TaskSettings) -> dict:
    """k-fold accuracy of each student, baseline and the teacher (every held-out prediction pooled,
    Wilson 95% intervals, the exported student minus each other paired per image), the same on the
    test folder when there is one, and whether the exported student beats the baselines (a WARNING
    with what to do when it does not)."""
    splits = sorted(int(e) for e in episodes["episode"].unique() if int(e) != FINAL_EPISODE)
    correct = scoring.correct_predictions([FINAL_EPISODE, *splits], task.trained_methods(), student_results,
                                          teacher_outputs, episode_key, baseline_predictions)
    estimate = scoring.task_accuracy(correct, FINAL_EPISODE, splits, task.export, task.baselines_to_beat)
    for line in reports.accuracy_lines(estimate):
        logger.info("Task accuracy: %s", line)
    verdict = estimate["verdict"]
    if verdict["beats_baselines"]:
        logger.info("Task verdict: %s", verdict["line"])
    else:
        logger.warning("Task verdict: %s %s", verdict["line"], registration_note(task, verdict))
    return estimate


def registered_name(task: TaskSettings, estimate: dict) -> str | None:
    """The Model Registry name of the new version, or None (:func:`packaging.registered_name`)."""
    return packaging.registered_name(task.registered_model_name, task.register, estimate["verdict"]["beats_baselines"])


def registration_note(task: TaskSettings, verdict: dict) -> str:
    return packaging.registration_note(task.registered_model_name, task.register, verdict["beats_baselines"])


def verdict_tags(estimate: dict, task: TaskSettings) -> dict[str, str]:
    """MLflow run tags: ``task.verdict`` and ``task.registered`` (:func:`packaging.verdict_tags`)."""
    return packaging.verdict_tags(estimate["verdict"], registered_name(task, estimate))


def _final_student(episodes: pd.DataFrame, student_results: dict, method: str) -> tuple[dict, list[str]]:
    return student_results[f"{method}/{episode_key(FINAL_EPISODE)}"](), episode_classes(episodes, FINAL_EPISODE)


def export_student(episodes: pd.DataFrame, student_results: dict, task: TaskSettings) -> tuple[bytes, bytes]:
    """The final student (trained on every labelled image) as ONNX and as safetensors."""
    result, classes = _final_student(episodes, student_results, task.export)
    return packaging.export_task_student(result, classes, task.export)


def measure_deployed_speed(student_onnx: bytes, task: TaskSettings) -> dict:
    """The exported model's CPU latency at batch 1 and throughput at batch 64 on ONNX Runtime."""
    return deployed_speed(student_onnx, task.speed_threads)


def write_model_card(
    report: dict, estimate: dict, speed: dict, episodes: pd.DataFrame, student_results: dict,
    task: TaskSettings, student: StudentSettings, distillation: DistillationConfig, teacher: TeacherSettings,
    synthesis: SynthesisSettings, generator: dict,
) -> tuple[str, dict]:
    """The model card, as Markdown for people and JSON for programs; ``generator``: which generator
    the synthetic images came from (:func:`choose_generator`)."""
    result, classes = _final_student(episodes, student_results, task.export)
    parameters = packaging.student_parameters(result, len(classes))
    settings = {"student": student, "distillation": distillation, "teacher": teacher, "synthesis": synthesis,
                "task": task}
    card = reports.model_card(report, estimate, speed, result, classes, parameters, task.export, settings, generator,
                              registration_note(task, estimate["verdict"]))
    return reports.model_card_markdown(card), card


def package_for_mlflow(student_onnx: bytes, student_safetensors: bytes, card_markdown: str, card: dict,
                       images: ImageCollection, episodes: pd.DataFrame, task: TaskSettings) -> LoggableModel:
    """The exported model with a real input example (a support image) and its signature, named for
    the Model Registry by ``task.registered_model_name`` when it is to be registered
    (:func:`registered_name`); its card and weights go with it."""
    package = packaging.package_task_model(
        student_onnx, student_safetensors, card_markdown, card, images.load(episodes["image_id"].iloc[0]),
        registered_name(task, card["accuracy"]), reports.accuracy_lines(card["accuracy"]))
    return LoggableModel.from_onnx(**package.arguments())
