"""Nodes of the ``evaluation`` pipeline: per-episode accuracies, confidence intervals, paired
comparisons, the episode planner, speed, plots and MLflow metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry to touch

from tint_distill.data.collection import ImageCollection
from tint_distill.datasets.mlflow_models import LoggableModel
from tint_distill.data.episodes import episode_classes
from tint_distill.datasets.student_results import WEIGHTS_FILE_KEY, load_student
from tint_distill.distill.distillation import count_parameters, measure_throughput
from tint_distill.distill.export import export_onnx
from tint_distill.distill.statistics import mean_ci95, paired_difference, variance_decomposition
from tint_distill.distill.student import create_student
from tint_distill.params import SettingError, Settings, settings_from_params
from tint_distill.planning import cost_plan, target_name, unit_costs
from tint_distill.keys import episode_key
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings, create_teacher as load_teacher
from tint_distill.methods import METHODS, parse_methods
from tint_distill.params import settings_from_params as settings_from_params

logger = logging.getLogger(__name__)


def parse_distillation(block):
    return settings_from_params(DistillationConfig, block, "distillation")


def parse_student(block):
    return settings_from_params(StudentSettings, block, "student")


def parse_teacher(block):
    return settings_from_params(TeacherSettings, block, "teacher")



@dataclass(frozen=True)
class SpeedSettings(Settings):
    batch_size: int = 32
    n_batches: int = 5
    threads: int | None = None  # None: torch's default

    def check(self) -> None:
        for name in ("batch_size", "n_batches"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PlannerSettings(Settings):
    methods: tuple[str, ...] = ("tint", "supports_only", "teacher")
    target_half_widths: tuple[float, ...] = (0.01, 0.02, 0.05)
    workers: tuple[int, ...] = (1, 8)  # the cost plan's wall hours on this many workers (a GPU each, say)

    def check(self) -> None:
        unknown = sorted(set(self.methods) - {*METHODS, "teacher"})
        if unknown:
            raise SettingError("methods", f"has unknown methods {unknown}; known: {[*METHODS, 'teacher']}")
        if any(not 0 < w < 1 for w in self.target_half_widths):
            raise SettingError("target_half_widths", f"must be in (0, 1), got {list(self.target_half_widths)}")
        if not self.workers or any(not isinstance(g, int) or g < 1 for g in self.workers):
            raise SettingError("workers", f"must be a list of whole numbers >= 1, got {list(self.workers)}")


@dataclass(frozen=True)
class LoggedModelSettings(Settings):
    method: str | None = "tint"          # whose student the run logs as an MLflow model; null: none
    episode: int | str = "median"        # an episode number, or the episode of the median accuracy
    registered_model_name: str | None = None  # also register it under this name

    def check(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise SettingError("method", f"must be one of {list(METHODS)} or null, got {self.method!r}")
        if not (self.episode == "median" or (isinstance(self.episode, int) and self.episode >= 0)):
            raise SettingError("episode", f"must be 'median' or an episode number, got {self.episode!r}")


@dataclass(frozen=True)
class EvaluationSettings(Settings):
    comparisons: tuple = ()   # [a, b] pairs: a - b per episode
    planner: dict = field(default_factory=dict)
    log_episode_loss_curves: bool = False  # true: every student's loss curve too (40 in the default run)
    logged_model: dict = field(default_factory=dict)

    def check(self) -> None:
        known = {*METHODS, "teacher"}
        for pair in self.comparisons:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not set(pair) <= known:
                raise SettingError("comparisons", f"must be [a, b] pairs of {sorted(known)}, got {pair!r}")


def parse_speed(speed: dict) -> SpeedSettings:
    return settings_from_params(SpeedSettings, speed, "speed")


def parse_evaluation(evaluation: dict) -> tuple[EvaluationSettings, PlannerSettings]:
    settings = settings_from_params(EvaluationSettings, evaluation, "evaluation")
    settings_from_params(LoggedModelSettings, settings.logged_model, "evaluation.logged_model")
    return settings, settings_from_params(PlannerSettings, settings.planner, "evaluation.planner")


def package_logged_student(episode_accuracies: pd.DataFrame, student_results: dict, episodes: pd.DataFrame,
                           images: ImageCollection, logged_model: dict) -> LoggableModel | None:
    """One student of the run as an MLflow model (ONNX, with signature and a support image as input
    example): by default the ``tint`` student of the episode with the median accuracy (the lower
    one of an even count), so the run's Models column shows a typical model of the method."""
    settings = settings_from_params(LoggedModelSettings, logged_model, "evaluation.logged_model")
    if settings.method is None:
        return None
    scores = episode_accuracies[episode_accuracies["method"] == settings.method].sort_values(["accuracy", "episode"])
    if scores.empty:  # a finished experiment must not fail over the model it shows: say why there is none
        logger.warning("No MLflow model logged: '%s' has no students in this run (parameter 'methods'); set "
                       "'evaluation.logged_model.method' to one of its methods, or to null.", settings.method)
        return None
    if settings.episode == "median":
        row = scores.iloc[(len(scores) - 1) // 2]
    else:
        matching = scores[scores["episode"] == settings.episode]
        if matching.empty:
            raise SettingError("episode", f"{settings.episode} is not an episode of this run "
                                          f"({sorted(scores['episode'].tolist())})")
        row = matching.iloc[0]
    episode = int(row["episode"])
    result = student_results[f"{settings.method}/{episode_key(episode)}"]()
    if WEIGHTS_FILE_KEY not in result:
        logger.warning("No MLflow model logged: the %s students were not kept; add '%s' to 'student.keep_weights' "
                       "(or set 'evaluation.logged_model.method' to null).", settings.method, settings.method)
        return None
    classes = episode_classes(episodes, episode)
    onnx_model = export_onnx(load_student(result, len(classes)), result["image_size"], classes,
                             metadata={"method": settings.method, "episode": episode})
    logger.info("Logging the %s student of episode %d (query accuracy %.3f) as an MLflow model", settings.method,
                episode, row["accuracy"])
    supports = episodes.loc[(episodes["episode"] == episode) & (episodes["role"] == "support"), "image_id"]
    return LoggableModel.from_onnx(
        onnx_model, example_images=[images.load(supports.iloc[0])],
        registered_model_name=settings.registered_model_name,
        metadata={"method": settings.method, "episode": episode, "query_accuracy": float(row["accuracy"])},
    )


def collect_episode_accuracies(student_results: dict, teacher_outputs: dict) -> pd.DataFrame:
    """One row per (method, episode): accuracy on the queries and what the student saw."""
    rows = []
    for key, load in sorted(teacher_outputs.items()):
        outputs = load()
        labels = outputs["query_labels"]
        rows.append({
            "method": "teacher",
            "episode": int(key.rsplit("_", 1)[1]),
            "accuracy": float((outputs["query_logits"].argmax(1) == labels).float().mean()),
            "n_queries": int(labels.numel()),
            "n_way": int(labels.max()) + 1,
            "n_unlabeled": 0,
            "teacher_agreement_on_unlabeled": None,
        })
    for _, load in sorted(student_results.items()):
        result = load()
        rows.append({k: v for k, v in result.items() if k not in ("history", "weights_file", "query_predictions")})
    table = pd.DataFrame(rows).sort_values(["method", "episode"], kind="stable").reset_index(drop=True)
    return table


def measure_speed(teacher: dict, student: dict, distillation: dict, n_way: int, speed: dict) -> dict:
    """Parameters and CPU inference throughput (images/s) of the teacher and the student."""
    config = parse_distillation(distillation)
    speed = parse_speed(speed)
    backbone = load_teacher(parse_teacher(teacher))
    student_model = create_student(parse_student(student).name, num_classes=n_way, image_size=config.image_size)
    threads = speed.threads or torch.get_num_threads()
    measured = {}
    for name, model, size in (
        ("teacher", backbone.model, backbone.image_size),
        ("student", student_model, config.image_size),
    ):
        images_per_s = measure_throughput(
            model, size, batch_size=speed.batch_size, n_batches=speed.n_batches, threads=threads
        )
        measured[name] = {"parameters": count_parameters(model), "image_size": size, "images_per_s": images_per_s}
        logger.info("%s: %d parameters, %.1f images/s at %d px", name, measured[name]["parameters"], images_per_s, size)
    measured["student_speedup"] = measured["student"]["images_per_s"] / measured["teacher"]["images_per_s"]
    measured["device"] = "cpu"
    measured["threads"] = threads
    return measured


def collect_unit_costs(class_specialisations: dict, synthetic_images: dict, teacher_outputs: dict,
                       student_results: dict) -> pd.DataFrame:
    """Each unit of work of this run's episodes: stage, partition, episode, seconds, device, host."""
    return unit_costs({"class_specialisations": class_specialisations, "synthetic_images": synthetic_images,
                       "teacher_outputs": teacher_outputs, "student_results": student_results})


def summarise(episode_accuracies: pd.DataFrame, speed: dict, unit_costs: pd.DataFrame, comparisons: list[list[str]],
              planner: dict, inversion_report: dict | None = None) -> dict:
    """Mean accuracy and 95% CI per method, how often the teacher labels a method's images as the
    class they stand for, paired differences, the episode planner, what its targets cost
    (``cost_plan``: episodes, device-hours, wall-hours on G workers), speed, and how faithfully the
    null-text inversion rebuilds the supports (``inversion``)."""
    methods = {}
    by_method = {m: g.sort_values("episode") for m, g in episode_accuracies.groupby("method")}
    for method, group in by_method.items():
        mean, half_width = mean_ci95(group["accuracy"].to_numpy())
        n_queries = int(group["n_queries"].iloc[0])
        n_way = int(group["n_way"].iloc[0])
        methods[method] = {
            "accuracy": mean,
            "ci95": half_width,
            "n_episodes": int(len(group)),
            "n_queries_per_class": n_queries // n_way,
            "n_way": n_way,
            "n_unlabeled_per_episode": float(group["n_unlabeled"].mean()),
        }
        agreement = group.get("teacher_agreement_on_unlabeled", pd.Series(dtype=float)).dropna()
        if len(agreement):
            methods[method]["teacher_agreement_on_unlabeled"] = float(agreement.astype(float).mean())
    paired = {}
    for first, second in comparisons:
        if first in by_method and second in by_method:
            a, b = by_method[first].set_index("episode")["accuracy"], by_method[second].set_index("episode")["accuracy"]
            common = a.index.intersection(b.index)
            result = paired_difference(a[common].to_numpy(), b[common].to_numpy())
            paired[f"{first}_vs_{second}"] = {
                "mean_diff": result["mean"], "ci95": [result["low"], result["high"]], "n_episodes": len(common),
            }
    planner = settings_from_params(PlannerSettings, planner, "evaluation.planner")
    planned = {}
    for method in planner.methods:
        if method in by_method:
            group = by_method[method]
            planned[method] = variance_decomposition(
                group["accuracy"].to_numpy(), int(group["n_queries"].iloc[0]), list(planner.target_half_widths)
            )
    costed = next((m for m in planner.methods if m in planned), None)
    plan = cost_plan(unit_costs, planned[costed]["episodes_needed"] if costed else [], planner.workers, costed)
    for target in plan["targets"]:
        logger.info("Cost plan (%s): %s", costed, target["text"])
    summary = {"methods": methods, "comparisons": paired, "planner": planned, "cost_plan": plan, "speed": speed}
    if inversion_report and inversion_report.get("summary"):
        summary["inversion"] = inversion_report["summary"]
    return summary


def plot_accuracy(summary: dict) -> Figure:
    """Accuracy per method with its 95% confidence interval."""
    names = list(summary["methods"])
    means = [summary["methods"][m]["accuracy"] for m in names]
    errors = [summary["methods"][m]["ci95"] for m in names]
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    axis = figure.subplots()
    axis.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=5)
    axis.set_xticks(range(len(names)), names, rotation=20)
    if names:
        axis.axhline(1 / summary["methods"][names[0]]["n_way"], color="grey", linestyle="--", label="chance")
        axis.legend(loc="lower right")
    episodes = {summary["methods"][m]["n_episodes"] for m in names}
    axis.set_ylabel("query accuracy")
    axis.set_title(f"Accuracy per method, mean and 95% CI over {', '.join(map(str, sorted(episodes)))} episodes")
    axis.grid(alpha=0.3)
    return figure


def plot_speed_accuracy(summary: dict) -> Figure:
    """Teacher and students: accuracy against CPU throughput (images/s, log scale)."""
    speed = summary["speed"]
    figure = Figure(figsize=(6, 4), layout="constrained")
    axis = figure.subplots()
    for position, (method, stats) in enumerate(summary["methods"].items()):
        role = "teacher" if method == "teacher" else "student"
        x = speed[role]["images_per_s"] * (1 + 0.04 * position)  # students share one speed: spread them
        axis.errorbar([x], [stats["accuracy"]], yerr=[stats["ci95"]], fmt="s" if role == "teacher" else "o",
                      capsize=4, label=method)
    axis.legend(fontsize=8, loc="best")
    axis.set_xscale("log")
    axis.set_xlabel("CPU images/s (log)")
    axis.set_ylabel("query accuracy")
    axis.set_title(
        f"teacher {speed['teacher']['parameters'] / 1e6:.2f} M params, "
        f"student {speed['student']['parameters'] / 1e6:.2f} M params"
    )
    axis.grid(alpha=0.3, which="both")
    return figure


def plot_cost_plan(summary: dict) -> Figure:
    """Wall hours against the CI half-width aimed for, one line per number of workers, each point
    labelled with its episodes; the measured cost per episode by stage in the title."""
    plan = summary["cost_plan"]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axis = figure.subplots()
    targets = sorted(plan["targets"], key=lambda t: t["half_width"])
    if not targets:
        axis.text(0.5, 0.5, plan.get("note", "no cost plan"), ha="center", va="center", wrap=True)
        axis.set_axis_off()
        return figure
    widths = [100 * t["half_width"] for t in targets]
    for workers in plan["workers"]:
        axis.plot(widths, [t["wall_hours"][str(workers)] for t in targets], "o-", label=f"{workers} worker(s)")
    for width, target in zip(widths, targets):
        axis.annotate(f"{target['episodes']} ep.", (width, target["wall_hours"][str(plan["workers"][0])]),
                      textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_yscale("log")
    axis.margins(x=0.1)
    axis.set_xlabel(f"95% CI half-width of {plan['method']} accuracy (points)")
    axis.set_ylabel("wall hours (log)")
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in plan["per_episode_s"].items() if stage != "total")
    axis.set_title(f"Cost plan: {plan['per_episode_s']['total']:.1f} device-s per episode ({stages})", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, which="both")
    return figure


def mlflow_metrics(summary: dict, student_results: dict, log_episode_loss_curves: bool) -> dict:
    """Accuracies, CIs and paired differences (with both CI bounds) as MLflow metrics; per method
    one training-loss curve, the mean over episodes per epoch with its standard deviation
    (``loss.<method>.mean`` / ``.std``); each student's own curve only on request."""
    metrics = {}
    for method, stats in summary["methods"].items():
        metrics[f"accuracy.{method}"] = {"value": stats["accuracy"], "step": 0}
        metrics[f"ci95.{method}"] = {"value": stats["ci95"], "step": 0}
        if "teacher_agreement_on_unlabeled" in stats:
            metrics[f"teacher_agreement.{method}"] = {"value": stats["teacher_agreement_on_unlabeled"], "step": 0}
    for name, result in summary["comparisons"].items():
        metrics[f"diff.{name}"] = {"value": result["mean_diff"], "step": 0}
        metrics[f"diff_low.{name}"] = {"value": result["ci95"][0], "step": 0}
        metrics[f"diff_high.{name}"] = {"value": result["ci95"][1], "step": 0}
    metrics["speed.student_speedup"] = {"value": summary["speed"]["student_speedup"], "step": 0}
    plan = summary.get("cost_plan", {})
    if plan.get("per_episode_s"):
        metrics["plan.device_s_per_episode"] = {"value": plan["per_episode_s"]["total"], "step": 0}
    for target in plan.get("targets", []):
        name = f"plan.{target_name(target['half_width'])}"
        metrics[f"{name}.episodes"] = {"value": target["episodes"], "step": 0}
        metrics[f"{name}.device_hours"] = {"value": target["device_hours"], "step": 0}
        for workers, hours in target["wall_hours"].items():
            metrics[f"{name}.wall_hours.{workers}_workers"] = {"value": hours, "step": 0}
    curves: dict[str, dict[int, list[float]]] = {}
    for key, load in sorted(student_results.items()):
        history = load()["history"]
        method = key.split("/", 1)[0]
        for point in history:
            curves.setdefault(method, {}).setdefault(int(point["epoch"]), []).append(float(point["loss"]))
        if log_episode_loss_curves:
            metrics[f"loss.{key.replace('/', '.')}"] = [{"value": h["loss"], "step": int(h["epoch"])} for h in history]
    for method, by_epoch in curves.items():
        epochs = sorted(by_epoch)
        metrics[f"loss.{method}.mean"] = [{"value": float(np.mean(by_epoch[e])), "step": e} for e in epochs]
        metrics[f"loss.{method}.std"] = [{"value": float(np.std(by_epoch[e])), "step": e} for e in epochs]
    return metrics
