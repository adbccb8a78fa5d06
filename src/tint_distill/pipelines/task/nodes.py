"""Nodes of the ``task`` pipeline: a user's own classes in, a tiny deployable classifier out.

``prepare_task`` turns the task folder into an episodes table (the final training set and the
leave-out splits, :mod:`tint_distill.data.task`); the TINT and distillation stages then run on it
unchanged; the nodes below estimate the accuracy, export the final student (ONNX, safetensors),
measure it, write its model card and hand it to MLflow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from tint_distill.data.collection import ImageCollection, check_decodable
from tint_distill.data.episodes import episode_classes
from tint_distill.data.task import FINAL_EPISODE, LABELLED, TEST, UNLABELED, task_classes, task_episodes
from tint_distill.datasets.mlflow_models import LoggableModel
from tint_distill.datasets.student_results import load_student
from tint_distill.distill.distillation import STUDENT_MEAN, STUDENT_STD, count_parameters
from tint_distill.distill.export import INPUT_POLICY, ONNX_OPSET, OnnxClassifier, export_onnx
from tint_distill.distill.statistics import binomial_ci95, paired_difference
from tint_distill.params import SettingError, Settings, settings_from_params
from tint_distill.tensor_files import tensors_to_bytes
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings, create_teacher as load_teacher
from tint_distill.methods import METHODS, parse_methods
from tint_distill.params import settings_from_params as settings_from_params
from tint_distill.methods import SAMPLERS as SYNTHETIC_METHODS
from tint_distill.keys import check_class_slugs, episode_key

logger = logging.getLogger(__name__)


def parse_distillation(block):
    return settings_from_params(DistillationConfig, block, "distillation")


def parse_student(block):
    return settings_from_params(StudentSettings, block, "student")


def parse_teacher(block):
    return settings_from_params(TeacherSettings, block, "teacher")



@dataclass(frozen=True)
class TaskSettings(Settings):
    methods: tuple[str, ...] = ("tint",)  # students trained per split (real_unlabeled, mined_real: no data here)
    export: str = "tint"                  # the method whose final student is exported
    max_repeats: int | None = None        # leave-out splits; null: every labelled image held out once
    registered_model_name: str | None = "tint_distill_task"  # MLflow Model Registry; null: logged only
    speed_threads: int | None = None      # ONNX Runtime threads for the card's CPU figures; null: its default

    def check(self) -> None:
        if "real_unlabeled" in self.methods:
            raise SettingError("methods", "cannot hold real_unlabeled: a task has no unlabeled real images of its "
                                          "classes (images in unlabeled/ join every other method)")
        if "mined_real" in self.methods:
            raise SettingError("methods", "cannot hold mined_real: a task has no base split of other classes to "
                                          "mine (images in unlabeled/ join every other method)")
        if not set(self.methods) & set(SYNTHETIC_METHODS):
            raise SettingError("methods", f"must hold a method that distils on synthetic images {list(SYNTHETIC_METHODS)} "
                                          f"(supports_only may be added as a baseline), got {list(self.methods)}")
        if self.export not in self.methods:
            raise SettingError("export", f"must be one of the task's methods {list(self.methods)}, got {self.export!r}")
        if self.max_repeats is not None and self.max_repeats < 0:
            raise SettingError("max_repeats", f"must be >= 0 or null, got {self.max_repeats}")


def parse_settings(task: dict) -> TaskSettings:
    settings = settings_from_params(TaskSettings, task, "task")
    parse_methods(list(settings.methods))
    return settings


def prepare_task(images: ImageCollection, task: dict, student: dict,
                 min_image_side: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The task's image index and episodes table, after every image has been decoded: all the
    unreadable and too small files are listed at once (the experiment's own check), before any
    work starts."""
    settings = parse_settings(task)
    if settings.export not in parse_student(student).keep_weights:
        raise SettingError("keep_weights", f"must include the exported method '{settings.export}' for a task run "
                                           "(parameter 'student.keep_weights')")
    check_class_slugs(images.index.loc[images.index["split"] == LABELLED, "class_name"].unique())
    check_decodable(images, images.index["image_id"], min_image_side)
    index = images.index.copy()
    episodes = task_episodes(index, settings.max_repeats)
    report = describe_task(index, episodes)
    logger.info("Task: %d classes %s, images per class %s, %d test images, %d unlabelled images, %d leave-out splits",
                len(report["classes"]), report["classes"], report["images_per_class"], report["test_images"],
                report["unlabeled_images"], report["leave_out_splits"])
    if not report["leave_out_splits"]:
        logger.warning("Every class has a single labelled image: no leave-out estimate of the accuracy is possible.")
    return index, episodes, report


def describe_task(index: pd.DataFrame, episodes: pd.DataFrame) -> dict:
    labelled = index[index["split"] == LABELLED]
    counts = labelled.groupby("class_name").size()
    return {
        "classes": task_classes(index),
        "images_per_class": {name: int(n) for name, n in counts.items()},
        "test_images": int((index["split"] == TEST).sum()),
        "unlabeled_images": int((index["split"] == UNLABELED).sum()),
        "leave_out_splits": int(episodes["episode"].max()),
        "scored_classes": sorted(counts[counts >= 2].index),
    }


def _proportion(correct: list[bool]) -> dict:
    """Accuracy over predictions with its Wilson 95% interval."""
    low, high = binomial_ci95(int(sum(correct)), len(correct))
    return {"accuracy": float(np.mean(correct)), "low": low, "high": high, "predictions": len(correct)}


def estimate_accuracy(episodes: pd.DataFrame, student_results: dict, teacher_outputs: dict, task: dict) -> dict:
    """Leave-out accuracy of each method's student and of the teacher: every held-out prediction of
    every split pooled, with a Wilson 95% interval; the teacher-minus-student difference paired per
    held-out image (95% t-interval); and the same on the test folder when there is one."""
    settings = parse_settings(task)
    methods = [m for m in METHODS if m in settings.methods]
    splits = sorted(int(e) for e in episodes["episode"].unique() if int(e) != FINAL_EPISODE)
    correct: dict[int, dict[str, list[bool]]] = {}
    for episode in [FINAL_EPISODE, *splits]:
        outputs = teacher_outputs[episode_key(episode)]()
        labels = outputs["query_labels"].long().tolist()
        correct[episode] = {"teacher": [p == y for p, y in zip(outputs["query_logits"].argmax(1).tolist(), labels)]}
        for method in methods:
            predictions = student_results[f"{method}/{episode_key(episode)}"]()["query_predictions"]
            correct[episode][method] = [p == y for p, y in zip(predictions, labels)]

    def scored(episode_list: list[int]) -> dict | None:
        pooled = {name: [c for e in episode_list for c in correct[e][name]] for name in ["teacher", *methods]}
        if not pooled["teacher"]:
            return None
        result = {"methods": {name: _proportion(values) for name, values in pooled.items()}, "comparisons": {}}
        for method in methods:
            difference = paired_difference(np.array(pooled["teacher"], float), np.array(pooled[method], float))
            interval = None if np.isnan(difference["half_width"]) else [max(-1.0, difference["low"]),
                                                                           min(1.0, difference["high"])]
            result["comparisons"][f"teacher_vs_{method}"] = {"mean_diff": difference["mean"], "ci95": interval}
        return result

    leave_out = scored(splits) if splits else None
    if leave_out:
        leave_out.update(
            splits=len(splits),
            per_split={name: [float(np.mean(correct[e][name])) for e in splits] for name in ["teacher", *methods]},
            note="Each split re-runs the whole method on K-1 images per class and scores the held-out image; the "
                 "intervals treat the held-out predictions as independent, which the shared training images make "
                 "only approximately true.",
        )
    test = scored([FINAL_EPISODE])
    estimate = {"leave_out": leave_out, "test": test, "export": settings.export}
    for line in accuracy_lines(estimate):
        logger.info("Task accuracy: %s", line)
    return estimate


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def accuracy_lines(estimate: dict) -> list[str]:
    """One readable line per estimate, the exported student first:
    ``tint student: 85.0% [64.0%, 94.8%] on 20 held-out images (5 leave-out splits)``."""
    lines = []
    for part, where in (("leave_out", "held-out images ({splits} leave-out splits)"), ("test", "test images")):
        if not estimate.get(part):
            continue
        methods = estimate[part]["methods"]
        for name in sorted(methods, key=lambda n: (n != estimate["export"], n == "teacher", n)):
            stats = methods[name]
            label = "teacher (for reference)" if name == "teacher" else f"{name} student"
            lines.append(f"{label}: {_pct(stats['accuracy'])} [{_pct(stats['low'])}, {_pct(stats['high'])}] on "
                         f"{stats['predictions']} {where.format(splits=estimate[part].get('splits'))}")
    return lines or ["no estimate: every class has one labelled image and there is no test folder"]


def _final_student(episodes: pd.DataFrame, student_results: dict, method: str) -> tuple[dict, list[str]]:
    return student_results[f"{method}/{episode_key(FINAL_EPISODE)}"](), episode_classes(episodes, FINAL_EPISODE)


def export_student(episodes: pd.DataFrame, student_results: dict, task: dict) -> tuple[bytes, bytes]:
    """The final student (trained on every labelled image) as ONNX and as safetensors."""
    settings = parse_settings(task)
    result, classes = _final_student(episodes, student_results, settings.export)
    model = load_student(result, len(classes))
    about = {"method": settings.export, "student": result["student"], "normalisation_inside": True,
             "mean": list(STUDENT_MEAN), "std": list(STUDENT_STD)}
    onnx_model = export_onnx(model, result["image_size"], classes, metadata=about)
    weights = tensors_to_bytes(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        metadata={"classes": json.dumps(classes), "image_size": str(result["image_size"]), "input": INPUT_POLICY,
                  **{k: json.dumps(v) for k, v in about.items() if k != "normalisation_inside"}},
    )
    logger.info("Exported the %s student: %d classes, %d px, ONNX %.1f MB", settings.export, len(classes),
                result["image_size"], len(onnx_model) / 1e6)
    return onnx_model, weights


def measure_deployed_speed(student_onnx: bytes, task: dict) -> dict:
    """The exported model's CPU latency at batch 1 and throughput at batch 64 on ONNX Runtime."""
    classifier = OnnxClassifier(student_onnx, threads=parse_settings(task).speed_threads)
    speed = asdict(classifier.speed())
    logger.info("ONNX Runtime, CPU: %.2f ms per image at batch 1, %.0f images/s at batch 64 (%d threads)",
                speed["latency_ms_batch_1"], speed["images_per_s_batch_64"], speed["threads"])
    return {**speed, "runtime": "onnxruntime", "device": "cpu"}


def write_model_card(
    report: dict, estimate: dict, speed: dict, episodes: pd.DataFrame, student_results: dict,
    task: dict, student: dict, distillation: dict, teacher: dict, synthesis: dict,
) -> tuple[str, dict]:
    """The model card, as Markdown for people and JSON for programs."""
    settings = parse_settings(task)
    result, classes = _final_student(episodes, student_results, settings.export)
    parameters = count_parameters(load_student(result, len(classes)))
    real_unlabeled = report["unlabeled_images"] if settings.export != "supports_only" else 0
    card = {
        "model": f"{result['student']} student distilled with {settings.export}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": classes,
        "input": {"image_size": result["image_size"], "policy": INPUT_POLICY, "normalisation": "inside the model",
                  "mean": list(STUDENT_MEAN), "std": list(STUDENT_STD), "onnx_input": "images [batch, 3, S, S]",
                  "onnx_outputs": ["logits [batch, classes]", "probabilities [batch, classes]"], "opset": ONNX_OPSET},
        "accuracy": estimate,
        "parameters": parameters,
        "speed_cpu": speed,
        "training": {
            "supports_per_class": report["images_per_class"],
            "synthetic_images": int(result["n_unlabeled"]) - real_unlabeled,
            "unlabeled_real_images": real_unlabeled,
            "teacher_agreement_on_synthetic": result.get("teacher_agreement_on_unlabeled"),
            "epochs": len(result["history"]),
            "settings": {"student": student, "distillation": distillation, "teacher": teacher, "synthesis": synthesis,
                         "task": task},
        },
    }
    return model_card_markdown(card), card


def model_card_markdown(card: dict) -> str:
    speed, training, source = card["speed_cpu"], card["training"], card["input"]
    supports = ", ".join(f"{name} {n}" for name, n in training["supports_per_class"].items())
    lines = [
        f"# Model card: {card['model']}",
        "",
        f"Created {card['created']} by `kedro run --pipeline task` (tint_distill).",
        "",
        "## Classes",
        "",
        *[f"{label}. {name}" for label, name in enumerate(card["classes"])],
        "",
        "## Input",
        "",
        f"- {source['policy']} (image_size = {source['image_size']}).",
        f"- Normalisation (mean {source['mean']}, std {source['std']}) is inside the model.",
        f"- ONNX (opset {source['opset']}): input `{source['onnx_input']}`, outputs "
        + ", ".join(f"`{o}`" for o in source["onnx_outputs"]) + "; any batch size.",
        "",
        "## Accuracy",
        "",
        *[f"- {line}" for line in accuracy_lines(card["accuracy"])],
    ]
    for part in ("leave_out", "test"):
        for name, comparison in (card["accuracy"][part] or {}).get("comparisons", {}).items():
            bounds = comparison["ci95"]
            interval = f" [{100 * bounds[0]:+.1f}, {100 * bounds[1]:+.1f}]" if bounds else ""
            lines.append(f"- {name.replace('_vs_', ' − ')} ({part.replace('_', '-')}, paired per image): "
                         f"{100 * comparison['mean_diff']:+.1f} points{interval}")
    if card["accuracy"]["leave_out"]:
        lines += ["", f"95% intervals (Wilson). {card['accuracy']['leave_out']['note']}"]
    lines += [
        "",
        "## Size and speed (CPU, ONNX Runtime)",
        "",
        f"- {card['parameters'] / 1e6:.2f} M parameters.",
        f"- Latency at batch 1: {speed['latency_ms_batch_1']:.2f} ms; throughput at batch 64: "
        f"{speed['images_per_s_batch_64']:.0f} images/s ({speed['threads']} threads).",
        "",
        "## How it was trained",
        "",
        f"- Labelled images per class (all used as supports): {supports}.",
        f"- {training['synthetic_images']} synthetic images, labelled by the teacher "
        f"(teacher {training['settings']['teacher'].get('backbone')}); the teacher's label matched the intended class "
        f"for {_pct(training['teacher_agreement_on_synthetic'])} of them.",
        *([f"- {training['unlabeled_real_images']} unlabelled real images (`unlabeled/`), labelled by the teacher too."]
          if training["unlabeled_real_images"] else []),
        f"- {training['epochs']} epochs of distillation (KD on the synthetic images + cross-entropy on the supports).",
        "- All settings are in the JSON card (`training.settings`) and in the MLflow run.",
        "",
    ]
    return "\n".join(lines)


def package_for_mlflow(student_onnx: bytes, student_safetensors: bytes, card_markdown: str, card: dict,
                       images: ImageCollection, episodes: pd.DataFrame, task: dict) -> LoggableModel:
    """The exported model with a real input example (a support image) and its signature, named for
    the Model Registry by ``task.registered_model_name``; its card and weights go with it."""
    settings = parse_settings(task)
    return LoggableModel.from_onnx(
        student_onnx, example_images=[images.load(episodes["image_id"].iloc[0])],
        registered_model_name=settings.registered_model_name,
        metadata={"accuracy": accuracy_lines(card["accuracy"])},  # classes and input size come from the model
        files={"task_model/model_card.md": card_markdown, "task_model/model_card.json": json.dumps(card, indent=2),
               "task_model/student.safetensors": student_safetensors},
        description=card_markdown,
    )


def task_metrics(estimate: dict, speed: dict) -> dict:
    """MLflow metrics: ``task.accuracy.<name>`` with ``task.accuracy_low/high.<name>`` (leave-out, 95%),
    ``task.test_accuracy.<name>``,
    ``task.latency_ms_batch_1`` and ``task.images_per_s_batch_64``."""
    metrics = {"task.latency_ms_batch_1": speed["latency_ms_batch_1"],
               "task.images_per_s_batch_64": speed["images_per_s_batch_64"]}
    if estimate["leave_out"]:
        for name, stats in estimate["leave_out"]["methods"].items():
            metrics[f"task.accuracy.{name}"] = stats["accuracy"]
            metrics[f"task.accuracy_low.{name}"] = stats["low"]
            metrics[f"task.accuracy_high.{name}"] = stats["high"]
    if estimate["test"]:
        for name, stats in estimate["test"]["methods"].items():
            metrics[f"task.test_accuracy.{name}"] = stats["accuracy"]
    return {name: {"value": float(value), "step": 0} for name, value in metrics.items()}
