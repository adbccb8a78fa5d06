"""Scores of trained students: per-episode accuracies, means with 95% confidence intervals,
paired comparisons, the episode planner (experiment), the pooled leave-out estimate (task), and
both as MLflow metrics.

Partitioned inputs (``student_results``, ``teacher_outputs``) are mappings of partition key to a
function that loads the partition, as Kedro's partitioned datasets give them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tint_distill.distill.statistics import binomial_ci95, mean_ci95, paired_difference, variance_decomposition
from tint_distill.evaluation.packaging import LoggedModelSettings
from tint_distill.methods import METHODS
from tint_distill.params import SettingError, Settings
from tint_distill.planning import cost_plan, target_name

logger = logging.getLogger(__name__)

Partitions = Mapping[str, Callable[[], dict]]
TEACHER = "teacher"


@dataclass(frozen=True)
class PlannerSettings(Settings):
    """The ``evaluation.planner`` block: how many episodes a target CI half-width needs, and its cost."""

    methods: tuple[str, ...] = ("tint", "supports_only", TEACHER)
    target_half_widths: tuple[float, ...] = (0.01, 0.02, 0.05)
    workers: tuple[int, ...] = (1, 8)  # the cost plan's wall hours on this many workers (a GPU each, say)

    def check(self) -> None:
        unknown = sorted(set(self.methods) - {*METHODS, TEACHER})
        if unknown:
            raise SettingError("methods", f"has unknown methods {unknown}; known: {[*METHODS, TEACHER]}")
        if any(not 0 < w < 1 for w in self.target_half_widths):
            raise SettingError("target_half_widths", f"must be in (0, 1), got {list(self.target_half_widths)}")
        if not self.workers or any(not isinstance(g, int) or g < 1 for g in self.workers):
            raise SettingError("workers", f"must be a list of whole numbers >= 1, got {list(self.workers)}")


@dataclass(frozen=True)
class EvaluationSettings(Settings):
    """The ``evaluation`` block."""

    comparisons: tuple = ()   # [a, b] pairs: a - b per episode
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    log_episode_loss_curves: bool = False  # true: every student's loss curve too (40 in the default run)
    logged_model: LoggedModelSettings = field(default_factory=LoggedModelSettings)

    def check(self) -> None:
        known = {*METHODS, TEACHER}
        for pair in self.comparisons:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not set(pair) <= known:
                raise SettingError("comparisons", f"must be [a, b] pairs of {sorted(known)}, got {pair!r}")


def episode_accuracy_table(student_results: Partitions, teacher_outputs: Partitions) -> pd.DataFrame:
    """One row per (method, episode): accuracy on the queries and what the student saw; the
    teacher's rows come from its query logits."""
    rows = []
    for key, load in sorted(teacher_outputs.items()):
        outputs = load()
        labels = outputs["query_labels"]
        rows.append({
            "method": TEACHER,
            "episode": int(key.rsplit("_", 1)[1]),
            "accuracy": float((outputs["query_logits"].argmax(1) == labels).float().mean()),
            "n_queries": int(labels.numel()),
            "n_way": int(labels.max()) + 1,
            "n_unlabeled": 0,
            "teacher_agreement_on_unlabeled": None,
        })
    for _, load in sorted(student_results.items()):
        result = load()
        rows.append({k: v for k, v in result.items()
                     if k not in ("history", "weights_file", "query_predictions", "synthetic_images")})
    return pd.DataFrame(rows).sort_values(["method", "episode"], kind="stable").reset_index(drop=True)


def _by_method(episode_accuracies: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {m: g.sort_values("episode") for m, g in episode_accuracies.groupby("method")}


def method_summaries(episode_accuracies: pd.DataFrame) -> dict[str, dict]:
    """Per method: mean accuracy over episodes with its 95% CI half-width, the episode shape, and
    how often the teacher labels the method's images as the class they stand for."""
    methods = {}
    for method, group in _by_method(episode_accuracies).items():
        mean, half_width = mean_ci95(group["accuracy"].to_numpy())
        n_queries, n_way = int(group["n_queries"].iloc[0]), int(group["n_way"].iloc[0])
        methods[method] = {
            "accuracy": mean,
            "ci95": half_width,
            "n_episodes": int(len(group)),
            "n_queries_per_class": n_queries // n_way,
            "n_way": n_way,
            "n_unlabeled_per_episode": float(group["n_unlabeled"].mean()),
        }
        for name in ("teacher_agreement_on_unlabeled", "teacher_agreement_on_generated"):
            agreement = group.get(name, pd.Series(dtype=float)).dropna()
            if len(agreement):
                methods[method][name] = float(agreement.astype(float).mean())
    return methods


def synthetic_image_counts(student_results: Partitions) -> dict[str, dict]:
    """Per synthetic method: how many images were generated, passed the filter's thresholds and
    were kept (``synthesis.filter``), in all and per synthesis partition (``<sampler>/episode_XXXX/<class>``),
    from the students' records (a partition counted once, however many students read it)."""
    counts: dict[str, dict] = {}
    for key, load in sorted(student_results.items()):
        partitions = load().get("synthetic_images")
        if partitions:
            counts.setdefault(key.split("/", 1)[0], {}).update(partitions)
    summary = {}
    for method, partitions in counts.items():
        generated = sum(p["generated"] for p in partitions.values())
        kept = sum(p["kept"] for p in partitions.values())
        passed = [p["passed"] for p in partitions.values() if "passed" in p]
        summary[method] = {"generated": generated, **({"passed": sum(passed)} if passed else {}), "kept": kept,
                           "kept_fraction": kept / generated if generated else None,
                           "per_partition": dict(sorted(partitions.items()))}
    return summary


def paired_comparisons(episode_accuracies: pd.DataFrame, comparisons: Iterable[Iterable[str]]) -> dict[str, dict]:
    """``a_vs_b``: the mean of a - b over the episodes both have, with its 95% t-interval. Pairs
    with a method this run does not have are left out."""
    by_method = _by_method(episode_accuracies)
    paired = {}
    for first, second in comparisons:
        if first in by_method and second in by_method:
            a = by_method[first].set_index("episode")["accuracy"]
            b = by_method[second].set_index("episode")["accuracy"]
            common = a.index.intersection(b.index)
            result = paired_difference(a[common].to_numpy(), b[common].to_numpy())
            paired[f"{first}_vs_{second}"] = {
                "mean_diff": result["mean"], "ci95": [result["low"], result["high"]], "n_episodes": len(common),
            }
    return paired


def episode_plan(episode_accuracies: pd.DataFrame, unit_costs: pd.DataFrame,
                 planner: PlannerSettings) -> tuple[dict, dict]:
    """The planner (episodes needed per target half-width, from the variance between and within
    episodes) for each of ``planner.methods`` this run has, and the cost plan of the first."""
    by_method = _by_method(episode_accuracies)
    planned = {}
    for method in planner.methods:
        if method in by_method:
            group = by_method[method]
            planned[method] = variance_decomposition(
                group["accuracy"].to_numpy(), int(group["n_queries"].iloc[0]), list(planner.target_half_widths))
    costed = next((m for m in planner.methods if m in planned), None)
    plan = cost_plan(unit_costs, planned[costed]["episodes_needed"] if costed else [], planner.workers, costed)
    for target in plan["targets"]:
        logger.info("Cost plan (%s): %s", costed, target["text"])
    return planned, plan


def summarise(episode_accuracies: pd.DataFrame, speed: dict, unit_costs: pd.DataFrame,
              comparisons: Iterable[Iterable[str]], planner: PlannerSettings,
              inversion_report: dict | None = None, student_results: Partitions | None = None) -> dict:
    """The experiment's summary: per method (:func:`method_summaries`), paired comparisons, the
    planner and its cost plan, the speed report, how faithfully the null-text inversion
    rebuilds the supports (``inversion``) when there is a report, and the synthetic images
    generated and kept (``synthetic_images``, :func:`synthetic_image_counts`) when the students
    recorded them."""
    planned, plan = episode_plan(episode_accuracies, unit_costs, planner)
    summary = {"methods": method_summaries(episode_accuracies),
               "comparisons": paired_comparisons(episode_accuracies, comparisons),
               "planner": planned, "cost_plan": plan, "speed": speed}
    if inversion_report and inversion_report.get("summary"):
        summary["inversion"] = inversion_report["summary"]
    counts = synthetic_image_counts(student_results or {})
    if counts:
        summary["synthetic_images"] = counts
        for method, count in counts.items():
            logger.info("Synthetic images (%s): kept %d of %d generated (%.0f%%)", method, count["kept"],
                        count["generated"], 100 * (count["kept_fraction"] or 0))
    return summary


def loss_curves(student_results: Partitions, per_student: bool) -> dict[str, list[dict]]:
    """Per method the mean and standard deviation over its students of the training loss per
    epoch (``loss.<method>.mean`` / ``.std``); with ``per_student`` each student's own curve
    (``loss.<method>.<episode>``) too."""
    metrics, curves = {}, {}
    for key, load in sorted(student_results.items()):
        history = load()["history"]
        method = key.split("/", 1)[0]
        for point in history:
            curves.setdefault(method, {}).setdefault(int(point["epoch"]), []).append(float(point["loss"]))
        if per_student:
            metrics[f"loss.{key.replace('/', '.')}"] = [{"value": h["loss"], "step": int(h["epoch"])} for h in history]
    for method, by_epoch in curves.items():
        epochs = sorted(by_epoch)
        metrics[f"loss.{method}.mean"] = [{"value": float(np.mean(by_epoch[e])), "step": e} for e in epochs]
        metrics[f"loss.{method}.std"] = [{"value": float(np.std(by_epoch[e])), "step": e} for e in epochs]
    return metrics


def summary_metrics(summary: dict) -> dict[str, dict]:
    """The summary's accuracies, CIs, paired differences (both CI bounds), speed-up and cost plan
    as MLflow metrics (``{name: {"value": v, "step": 0}}``)."""
    values = {}
    for method, stats in summary["methods"].items():
        values[f"accuracy.{method}"] = stats["accuracy"]
        values[f"ci95.{method}"] = stats["ci95"]
        if "teacher_agreement_on_unlabeled" in stats:
            values[f"teacher_agreement.{method}"] = stats["teacher_agreement_on_unlabeled"]
        if "teacher_agreement_on_generated" in stats:
            values[f"teacher_agreement_generated.{method}"] = stats["teacher_agreement_on_generated"]
    for method, counts in summary.get("synthetic_images", {}).items():
        if counts["kept_fraction"] is not None:
            values[f"filter.kept_fraction.{method}"] = counts["kept_fraction"]
    for name, result in summary["comparisons"].items():
        values[f"diff.{name}"] = result["mean_diff"]
        values[f"diff_low.{name}"], values[f"diff_high.{name}"] = result["ci95"]
    values["speed.student_speedup"] = summary["speed"]["student_speedup"]
    plan = summary.get("cost_plan", {})
    if plan.get("per_episode_s"):
        values["plan.device_s_per_episode"] = plan["per_episode_s"]["total"]
    for target in plan.get("targets", []):
        name = f"plan.{target_name(target['half_width'])}"
        values[f"{name}.episodes"] = target["episodes"]
        values[f"{name}.device_hours"] = target["device_hours"]
        for workers, hours in target["wall_hours"].items():
            values[f"{name}.wall_hours.{workers}_workers"] = hours
    return {name: {"value": value, "step": 0} for name, value in values.items()}


# The task: pooled held-out predictions ----------------------------------------------------------

def proportion(correct: list[bool]) -> dict:
    """Accuracy over predictions with its Wilson 95% interval."""
    low, high = binomial_ci95(int(sum(correct)), len(correct))
    return {"accuracy": float(np.mean(correct)), "low": low, "high": high, "predictions": len(correct)}


def correct_predictions(episodes: Iterable[int], methods: list[str], student_results: Partitions,
                        teacher_outputs: Partitions, key_of: Callable[[int], str],
                        baselines: Mapping[str, Mapping[str, list[int]]] | None = None,
                        ) -> dict[int, dict[str, list[bool]]]:
    """Per episode, per method, ``teacher`` and baseline (``baselines``: per episode key, each
    baseline's predicted labels, :func:`tint_distill.evaluation.baselines.baseline_predictions`):
    whether each query was predicted right."""
    correct = {}
    for episode in episodes:
        outputs = teacher_outputs[key_of(episode)]()
        labels = outputs["query_labels"].long().tolist()
        correct[episode] = {}
        for method in methods:
            predictions = student_results[f"{method}/{key_of(episode)}"]()["query_predictions"]
            correct[episode][method] = [p == y for p, y in zip(predictions, labels)]
        baseline = (baselines or {}).get(key_of(episode), {})
        if baseline and baseline["labels"] != labels:
            raise ValueError(f"{key_of(episode)}: the baselines scored other queries than the students "
                             f"({len(baseline['labels'])} labels against {len(labels)}); rerun the task pipeline")
        for name, predictions in baseline.items():
            if name != "labels":
                correct[episode][name] = [p == y for p, y in zip(predictions, labels)]
        correct[episode][TEACHER] = [p == y for p, y in zip(outputs["query_logits"].argmax(1).tolist(), labels)]
    return correct


def pooled_scores(correct: Mapping[int, Mapping[str, list[bool]]], episodes: list[int], export: str) -> dict | None:
    """Every prediction of ``episodes`` pooled: per name (method, baseline, teacher) a Wilson
    interval, and ``<export>_vs_<name>``: the exported method minus each other one, paired per
    image (95% t-interval clipped to [-1, 1], None where it cannot be computed). None when there
    are no predictions."""
    names = list(correct[episodes[0]]) if episodes else []
    pooled = {name: [c for e in episodes for c in correct[e][name]] for name in names}
    if not pooled.get(export):
        return None
    result = {"methods": {name: proportion(values) for name, values in pooled.items()}, "comparisons": {}}
    for name in names:
        if name == export:
            continue
        difference = paired_difference(np.array(pooled[export], float), np.array(pooled[name], float))
        interval = None if np.isnan(difference["half_width"]) else [max(-1.0, difference["low"]),
                                                                       min(1.0, difference["high"])]
        result["comparisons"][f"{export}_vs_{name}"] = {"mean_diff": difference["mean"], "ci95": interval}
    return result


HELD_OUT_NOTE = ("Each fold re-runs the whole method on the other folds' images and scores its held-out images; "
                 "the intervals treat the held-out predictions as independent, which the shared training images "
                 "make only approximately true.")
ADVICE = ("To do better: add (more) unlabeled images of your domain (unlabeled/: they train a generator of your "
          "domain and join the distillation), use a real Stable Diffusion folder (sd_model_path) on a GPU, or label "
          "more images per class.")
TEACHER_FEATURES_ADVICE = ("Here the teacher's own features do better: if the teacher's backbone (teacher.backbone) "
                           "fits your size and speed budget, a nearest neighbour on its features is the better model "
                           "for now.")


def task_accuracy(correct: Mapping[int, Mapping[str, list[bool]]], final_episode: int, splits: list[int],
                  export: str, to_beat: Iterable[str] | None = None) -> dict:
    """The task's estimate: the k-fold splits pooled (with the accuracy of each fold, the number of
    held-out images and the width of the exported student's interval), the final model on the test
    images, each None where there is nothing to score, and the :func:`verdict` against ``to_beat``
    (default: :data:`~tint_distill.evaluation.baselines.VERDICT_BASELINES`)."""
    held_out = pooled_scores(correct, splits, export) if splits else None
    if held_out:
        stats = held_out["methods"][export]
        held_out.update(splits=len(splits), held_out_images=stats["predictions"], width=stats["high"] - stats["low"],
                        per_split={name: [float(np.mean(correct[e][name])) for e in splits]
                                   for name in held_out["methods"]},
                        note=HELD_OUT_NOTE)
    estimate = {"leave_out": held_out, "test": pooled_scores(correct, [final_episode], export), "export": export}
    return {**estimate, "verdict": verdict(estimate, to_beat)}


def verdict(estimate: dict, to_beat: Iterable[str] | None = None) -> dict:
    """Whether the exported student beats every baseline of ``to_beat`` (default: those a user would
    try first, :data:`~tint_distill.evaluation.baselines.VERDICT_BASELINES`): on the test images when there
    are some (the exported model itself), else on the k-fold held-out images. ``closest``: the
    baseline with the smallest margin (the best one), its paired difference and interval; ``line``:
    the card's first line. ``beats_baselines`` is None when nothing could be scored."""
    from tint_distill.evaluation.baselines import DESCRIPTIONS, VERDICT_BASELINES

    part = "test" if estimate["test"] else "leave_out" if estimate["leave_out"] else None
    if part is None:
        return {"beats_baselines": None, "on": None, "closest": None,
                "line": "No verdict: every class has one labelled image and there is no test folder, so nothing "
                        "could be scored against the baselines. Add a test/ folder or more images per class."}
    scores, export = estimate[part], estimate["export"]
    margins = {name: scores["comparisons"][f"{export}_vs_{name}"] for name in (to_beat or VERDICT_BASELINES)
               if f"{export}_vs_{name}" in scores["comparisons"]}
    if not margins:
        return {"beats_baselines": None, "on": part, "closest": None, "line": "No verdict: no baseline was scored."}
    closest = min(margins, key=lambda name: margins[name]["mean_diff"])
    difference, interval = margins[closest]["mean_diff"], margins[closest]["ci95"]
    beats = difference > 0
    where = (f"on {scores['methods'][export]['predictions']} "
             + ("test images" if part == "test" else f"held-out images ({scores['splits']} folds)"))
    bounds = f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]" if interval else ""
    if beats:
        line = f"Beats every baseline: {100 * difference:+.1f} points over {DESCRIPTIONS[closest]}{bounds} {where}"
        if interval and interval[0] <= 0:
            line += " (the interval includes 0: not a clear margin)"
    else:
        line = f"Does NOT beat {DESCRIPTIONS[closest]}: {100 * difference:+.1f} points{bounds} {where}. {ADVICE}"
        if closest.endswith("teacher_features"):
            line += f" {TEACHER_FEATURES_ADVICE}"
    return {"beats_baselines": beats, "on": part, "closest": closest, "mean_diff": difference, "ci95": interval,
            "line": line}


def task_metrics(estimate: dict, speed: dict) -> dict[str, dict]:
    """MLflow metrics: ``task.accuracy.<name>`` with ``task.accuracy_low/high.<name>`` (k-fold held-out
    images, 95%), ``task.test_accuracy.<name>`` (students, baselines, teacher), ``task.beats_baselines``
    (1 or 0) with ``task.margin_over_best_baseline`` (the exported student minus the best baseline,
    paired per image), ``task.latency_ms_batch_1`` and ``task.images_per_s_batch_64``."""
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
    found = estimate.get("verdict") or {}
    if found.get("beats_baselines") is not None:
        metrics["task.beats_baselines"] = float(found["beats_baselines"])
        metrics["task.margin_over_best_baseline"] = found["mean_diff"]
    return {name: {"value": float(value), "step": 0} for name, value in metrics.items()}
