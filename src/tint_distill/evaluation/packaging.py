"""A trained student as a deployable model: ONNX (normalisation inside, any batch size), the
task's safetensors, and what an MLflow model needs beside it (a real input example, metadata,
a Model Registry name, files). :class:`ModelPackage` holds the arguments of
``tint_distill.datasets.mlflow_models.LoggableModel.from_onnx``, so this module needs no Kedro."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tint_distill.methods import METHODS
from tint_distill.params import SettingError, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggedModelSettings(Settings):
    """The ``evaluation.logged_model`` block: which student of the experiment is logged as an MLflow model."""

    method: str | None = "tint"          # whose student the run logs as an MLflow model; null: none
    episode: int | str = "median"        # an episode number, or the episode of the median accuracy
    registered_model_name: str | None = "tint_distill_student"  # also register it under this name; null: log only

    def check(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise SettingError("method", f"must be one of {list(METHODS)} or null, got {self.method!r}")
        if not (self.episode == "median" or (isinstance(self.episode, int) and self.episode >= 0)):
            raise SettingError("episode", f"must be 'median' or an episode number, got {self.episode!r}")


@dataclass
class ModelPackage:
    """An ONNX model with what MLflow logs beside it (``LoggableModel.from_onnx(**package.arguments())``)."""

    onnx_model: bytes
    example_images: list
    registered_model_name: str | None = None
    metadata: dict = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)
    description: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the model's own (its accuracy and CI)
    params: dict[str, Any] = field(default_factory=dict)     # what it is (method, episode, classes)

    def arguments(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def student_onnx(result: Mapping, classes: list[str], metadata: dict) -> bytes:
    """A kept student result (its weights file) as ONNX."""
    from tint_distill.distill.student import load_student
    from tint_distill.distill.export import export_onnx

    return export_onnx(load_student(result, len(classes)), result["image_size"], classes, metadata=metadata)


def logged_episode(episode_accuracies: pd.DataFrame, settings: LoggedModelSettings) -> pd.Series | None:
    """The accuracy-table row of the student to log: the episode asked for, or the one of the median
    accuracy (the lower of an even count); None (with a warning) when the method has no students."""
    if settings.method is None:
        return None
    scores = scores_of(episode_accuracies, settings.method)
    if scores.empty:  # a finished experiment must not fail over the model it shows: say why there is none
        logger.warning("No MLflow model logged: '%s' has no students in this run (parameter 'methods'); set "
                       "'evaluation.logged_model.method' to one of its methods, or to null.", settings.method)
        return None
    if settings.episode == "median":
        return scores.iloc[(len(scores) - 1) // 2]
    matching = scores[scores["episode"] == settings.episode]
    if matching.empty:
        raise SettingError("episode", f"{settings.episode} is not an episode of this run "
                                      f"({sorted(scores['episode'].tolist())})")
    return matching.iloc[0]


def package_logged_student(episode_accuracies: pd.DataFrame, student_results: Mapping[str, Callable[[], dict]],
                           episodes: pd.DataFrame, load_image: Callable[[str], Any],
                           settings: LoggedModelSettings) -> ModelPackage | None:
    """One student of the experiment (:func:`logged_episode`) as ONNX, with a support image of its
    episode as the input example; None when there is none to log or its weights were not kept."""
    from tint_distill.data.episodes import episode_classes
    from tint_distill.distill.student import WEIGHTS_FILE_KEY
    from tint_distill.keys import episode_key

    row = logged_episode(episode_accuracies, settings)
    if row is None:
        return None
    episode = int(row["episode"])
    result = student_results[f"{settings.method}/{episode_key(episode)}"]()
    if WEIGHTS_FILE_KEY not in result:
        logger.warning("No MLflow model logged: the %s students were not kept; add '%s' to 'student.keep_weights' "
                       "(or set 'evaluation.logged_model.method' to null).", settings.method, settings.method)
        return None
    classes = episode_classes(episodes, episode)
    about = {"method": settings.method, "episode": episode}
    onnx_model = student_onnx(result, classes, metadata=about)
    logger.info("Logging the %s student of episode %d (query accuracy %.3f) as an MLflow model", settings.method,
                episode, row["accuracy"])
    supports = episodes.loc[(episodes["episode"] == episode) & (episodes["role"] == "support"), "image_id"]
    metrics = student_metrics(row)
    n_episodes = len(scores_of(episode_accuracies, settings.method))
    return ModelPackage(onnx_model, example_images=[load_image(supports.iloc[0])],
                        registered_model_name=settings.registered_model_name,
                        metadata={**about, "query_accuracy": float(row["accuracy"])},
                        description=student_description(settings, row, classes, metrics, n_episodes),
                        metrics=metrics,
                        params={**about, "classes": ", ".join(classes), "n_way": len(classes),
                                "n_shot": len(supports) // len(classes)})


def scores_of(episode_accuracies: pd.DataFrame, method: str) -> pd.DataFrame:
    """The accuracy-table rows of one method, lowest accuracy first."""
    return episode_accuracies[episode_accuracies["method"] == method].sort_values(["accuracy", "episode"])


def student_metrics(row: pd.Series) -> dict[str, float]:
    """A logged student's own numbers: its accuracy on its episode's queries with the Wilson 95%
    interval over them (``student.accuracy``, ``.accuracy_low``, ``.accuracy_high``, ``.n_queries``)."""
    from tint_distill.distill.statistics import binomial_ci95

    n = int(row["n_queries"])
    low, high = binomial_ci95(round(float(row["accuracy"]) * n), n)
    return {"student.accuracy": float(row["accuracy"]), "student.accuracy_low": low, "student.accuracy_high": high,
            "student.n_queries": float(n)}


def student_description(settings: LoggedModelSettings, row: pd.Series, classes: list[str], metrics: dict[str, float],
                        n_episodes: int) -> str:
    """Markdown for the logged student's page: which student it is, its accuracy and interval, its classes."""
    which = (f"the episode of the median accuracy among {n_episodes}" if settings.episode == "median"
             else "the episode asked for (`evaluation.logged_model.episode`)")
    return "\n".join([
        f"The `{settings.method}` student of episode {int(row['episode'])} ({which}), exported to ONNX "
        "(images in [0, 1], normalisation inside).",
        "",
        f"- Accuracy on its episode's {int(metrics['student.n_queries'])} queries: "
        f"**{100 * metrics['student.accuracy']:.1f}%** (Wilson 95% interval "
        f"{100 * metrics['student.accuracy_low']:.1f}–{100 * metrics['student.accuracy_high']:.1f}%)",
        f"- Classes ({len(classes)}): {', '.join(classes)}",
        f"- The run's mean over episodes is its `accuracy.{settings.method}` and `ci95.{settings.method}`.",
    ])


def export_task_student(result: Mapping, classes: list[str], method: str) -> tuple[bytes, bytes]:
    """The task's final student as ONNX and as safetensors (classes, input size and normalisation
    in the metadata of both)."""
    from tint_distill.distill.student import load_student
    from tint_distill.distill.distillation import STUDENT_MEAN, STUDENT_STD
    from tint_distill.distill.export import INPUT_POLICY, export_onnx
    from tint_distill.tensor_files import tensors_to_bytes

    model = load_student(result, len(classes))
    about = {"method": method, "student": result["student"], "normalisation_inside": True,
             "mean": list(STUDENT_MEAN), "std": list(STUDENT_STD)}
    onnx_model = export_onnx(model, result["image_size"], classes, metadata=about)
    weights = tensors_to_bytes(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        metadata={"classes": json.dumps(classes), "image_size": str(result["image_size"]), "input": INPUT_POLICY,
                  **{k: json.dumps(v) for k, v in about.items() if k != "normalisation_inside"}},
    )
    logger.info("Exported the %s student: %d classes, %d px, ONNX %.1f MB", method, len(classes),
                result["image_size"], len(onnx_model) / 1e6)
    return onnx_model, weights


def package_task_model(student_onnx_model: bytes, student_safetensors: bytes, card_markdown: str, card: dict,
                       example_image: Any, registered_model_name: str | None, accuracy: list[str]) -> ModelPackage:
    """The task's exported model with a real input example and its card and weights as files; the
    card is the registered version's description."""
    return ModelPackage(
        student_onnx_model, example_images=[example_image], registered_model_name=registered_model_name,
        metadata={"accuracy": accuracy},  # classes and input size come from the model
        files={"task_model/model_card.md": card_markdown, "task_model/model_card.json": json.dumps(card, indent=2),
               "task_model/student.safetensors": student_safetensors},
        description=card_markdown,
        metrics=task_model_metrics(card),
        params={"method": card["accuracy"]["export"], "classes": ", ".join(card["classes"]),
                "n_classes": len(card["classes"]), "image_size": card["input"]["image_size"]},
    )


def task_model_metrics(card: Mapping) -> dict[str, float]:
    """The exported model's own numbers, from its card: the leave-out accuracy of its method with the
    Wilson 95% interval (``task_model.accuracy``, ``.accuracy_low``, ``.accuracy_high``), the same
    on the test folder where there is one (``task_model.test_accuracy``...), and its CPU latency and
    throughput."""
    method, metrics = card["accuracy"]["export"], {}
    for estimate, name in (("leave_out", "accuracy"), ("test", "test_accuracy")):
        if card["accuracy"].get(estimate):
            stats = card["accuracy"][estimate]["methods"][method]
            metrics |= {f"task_model.{name}": stats["accuracy"], f"task_model.{name}_low": stats["low"],
                        f"task_model.{name}_high": stats["high"]}
    speed = card.get("speed_cpu") or {}
    metrics |= {f"task_model.{key}": speed[key] for key in ("latency_ms_batch_1", "images_per_s_batch_64")
                if key in speed}
    return {name: float(value) for name, value in metrics.items()}


def registered_name(name: str | None, register: str, beats_baselines: bool | None) -> str | None:
    """The Model Registry name the task's model gets a new version under: ``name`` when ``register``
    is ``always``, or ``auto`` and the student beats every baseline; else None (logged only)."""
    wanted = register == "always" or (register == "auto" and bool(beats_baselines))
    return name if wanted else None


def registration_note(name: str | None, register: str, beats_baselines: bool | None) -> str:
    """What happens to the task's model in the Model Registry, and why (for the card and the log)."""
    if not name:
        return "The model is logged to MLflow, not registered (task.registered_model_name is null)."
    if registered_name(name, register, beats_baselines):
        return f"Registered as a new version of '{name}' (task.register: {register})."
    if register == "never":
        return "Not registered (task.register: never); the model is logged to the MLflow run."
    return (f"Not registered as a new version of '{name}' because it does not beat the baselines (task.register: "
            "auto); the model is logged to the MLflow run. Set task.register: always to register it anyway.")


def verdict_tags(verdict: dict, registered: str | None) -> dict[str, str]:
    """MLflow run tags: ``task.verdict`` (beats_baselines | does_not_beat:<baseline> | none) and
    ``task.registered`` (the registered name, or no)."""
    beats = verdict["beats_baselines"]
    found = "none" if beats is None else "beats_baselines" if beats else f"does_not_beat:{verdict['closest']}"
    return {"task.verdict": found, "task.registered": registered or "no"}


def student_parameters(result: Mapping, n_classes: int) -> int:
    """The parameters of a kept student."""
    from tint_distill.distill.student import load_student
    from tint_distill.distill.distillation import count_parameters

    return count_parameters(load_student(result, n_classes))
