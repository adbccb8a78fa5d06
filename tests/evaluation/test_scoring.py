"""The Kedro-free scoring of trained students, on tables small enough to work out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from tint_distill.evaluation import scoring
from tint_distill.evaluation.reports import accuracy_lines
from tint_distill.evaluation.scoring import EvaluationSettings, PlannerSettings
from tint_distill.params import ParameterError, settings_from_params

T_975_2 = 4.302652729749464  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
Z95 = 1.959963984540054


def table() -> pd.DataFrame:
    rows = []
    for method, accuracies in (("tint", [0.8, 0.6, 0.7]), ("supports_only", [0.5, 0.6, 0.4])):
        for episode, accuracy in enumerate(accuracies):
            rows.append({"method": method, "episode": episode, "accuracy": accuracy, "n_queries": 10, "n_way": 2,
                         "n_unlabeled": 4 if method == "tint" else 0,
                         "teacher_agreement_on_unlabeled": [1.0, 0.5, 0.75][episode] if method == "tint" else None})
    return pd.DataFrame(rows)


def test_mean_and_ci_per_method():
    methods = scoring.method_summaries(table())
    tint = methods["tint"]
    assert tint["accuracy"] == pytest.approx(0.7)
    assert tint["ci95"] == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))  # sd of 0.8, 0.6, 0.7 is 0.1
    assert (tint["n_episodes"], tint["n_queries_per_class"], tint["n_way"]) == (3, 5, 2)
    assert tint["n_unlabeled_per_episode"] == 4.0
    assert tint["teacher_agreement_on_unlabeled"] == pytest.approx(0.75)
    assert "teacher_agreement_on_unlabeled" not in methods["supports_only"]


def test_paired_difference_is_per_episode():
    paired = scoring.paired_comparisons(table(), [["tint", "supports_only"], ["tint", "teacher"]])
    assert list(paired) == ["tint_vs_supports_only"], "a pair with a method the run lacks is left out"
    result = paired["tint_vs_supports_only"]
    half = T_975_2 * math.sqrt(0.03) / math.sqrt(3)  # differences 0.3, 0.0, 0.3: mean 0.2, variance 0.03
    assert result["mean_diff"] == pytest.approx(0.2)
    assert result["ci95"] == pytest.approx([0.2 - half, 0.2 + half])
    assert result["n_episodes"] == 3


def test_summary_and_its_mlflow_metrics():
    costs = pd.DataFrame(columns=["stage", "partition", "episode", "seconds", "device", "host"])
    speed = {"student_speedup": 12.5}
    summary = scoring.summarise(table(), speed, costs, [["tint", "supports_only"]], PlannerSettings(methods=("tint",)))
    assert list(summary) == ["methods", "comparisons", "planner", "cost_plan", "speed"]
    assert list(summary["planner"]) == ["tint"] and summary["cost_plan"]["targets"] == []
    metrics = scoring.summary_metrics(summary)
    assert sorted(metrics) == sorted([
        "accuracy.tint", "ci95.tint", "teacher_agreement.tint", "accuracy.supports_only", "ci95.supports_only",
        "diff.tint_vs_supports_only", "diff_low.tint_vs_supports_only", "diff_high.tint_vs_supports_only",
        "speed.student_speedup"])
    assert metrics["accuracy.supports_only"] == {"value": pytest.approx(0.5), "step": 0}
    assert metrics["diff_high.tint_vs_supports_only"]["value"] == pytest.approx(
        0.2 + T_975_2 * math.sqrt(0.03) / math.sqrt(3))
    assert metrics["speed.student_speedup"] == {"value": 12.5, "step": 0}


def test_loss_curves_are_mean_and_std_over_a_methods_students():
    histories = {"tint/episode_0000": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}],
                 "tint/episode_0001": [{"epoch": 1, "loss": 4.0}, {"epoch": 2, "loss": 1.0}]}
    results = {key: (lambda h=h: {"history": h}) for key, h in histories.items()}
    curves = scoring.loss_curves(results, per_student=False)
    assert curves == {"loss.tint.mean": [{"value": 3.0, "step": 1}, {"value": 1.0, "step": 2}],
                      "loss.tint.std": [{"value": 1.0, "step": 1}, {"value": 0.0, "step": 2}]}
    assert "loss.tint.episode_0001" in scoring.loss_curves(results, per_student=True)


def test_episode_accuracy_table_from_teacher_logits_and_student_results():
    teacher = {"episode_0003": lambda: {"query_labels": torch.tensor([0, 1, 1, 0]),
                                        "query_logits": torch.tensor([[2.0, 0], [0, 1], [1, 0], [3, 0]])}}
    student = {"tint/episode_0003": lambda: {"method": "tint", "episode": 3, "accuracy": 0.5, "n_queries": 4,
                                             "n_way": 2, "n_unlabeled": 6, "history": [], "query_predictions": [0]}}
    accuracies = scoring.episode_accuracy_table(student, teacher)
    assert accuracies["method"].tolist() == ["teacher", "tint"]
    assert accuracies.loc[0, "accuracy"] == 0.75 and accuracies.loc[0, "n_way"] == 2
    assert "history" not in accuracies.columns and "query_predictions" not in accuracies.columns


def test_task_estimate_pools_held_out_predictions_with_wilson_intervals():
    correct = {0: {"tint": [True, False], "teacher": [True, True]},
               1: {"tint": [True, True], "teacher": [True, False]},
               2: {"tint": [False], "teacher": [True]}}
    estimate = scoring.task_accuracy(correct, 0, [1, 2], "tint")
    tint = estimate["leave_out"]["methods"]["tint"]  # 2 of 3 held-out predictions right
    p, n = 2 / 3, 3
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    assert tint["accuracy"] == pytest.approx(p) and tint["predictions"] == 3
    assert (tint["low"], tint["high"]) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert estimate["leave_out"]["held_out_images"] == 3 and estimate["leave_out"]["width"] == pytest.approx(2 * half)
    assert estimate["leave_out"]["per_split"] == {"teacher": [0.5, 1.0], "tint": [1.0, 0.0]}
    assert estimate["leave_out"]["comparisons"]["tint_vs_teacher"]["mean_diff"] == pytest.approx(0.0)
    assert estimate["test"]["methods"]["teacher"]["accuracy"] == 1.0
    lines = accuracy_lines(estimate)
    assert lines[0] == (f"tint student: 66.7% [{100 * (centre - half):.1f}%, {100 * (centre + half):.1f}%] on 3 "
                        "held-out images (2 folds)")
    assert lines[1].startswith("teacher (prototypes, for reference): 66.7%")
    metrics = scoring.task_metrics(estimate, {"latency_ms_batch_1": 1.5, "images_per_s_batch_64": 900})
    assert metrics["task.accuracy.tint"]["value"] == pytest.approx(p)
    assert metrics["task.accuracy_low.tint"]["value"] == pytest.approx(centre - half)
    assert metrics["task.test_accuracy.tint"]["value"] == 0.5
    assert metrics["task.latency_ms_batch_1"] == {"value": 1.5, "step": 0}


def _with_baselines(tint: list[bool], pixels: list[bool]) -> dict:
    """One test episode (0) where the supports-only student is always wrong and the teacher always right."""
    n = len(tint)
    return {0: {"tint": tint, "supports_only": [False] * n, "nn_teacher_features": [False] * n,
                "ncm_teacher_features": [False] * n, "nn_raw_pixels": pixels, "teacher": [True] * n}}


def test_the_verdict_names_the_best_baseline_and_flips_when_a_baseline_wins():
    wins = scoring.task_accuracy(_with_baselines([True] * 10, [True] * 5 + [False] * 5), 0, [], "tint")
    verdict = wins["verdict"]
    assert verdict["beats_baselines"] is True and verdict["closest"] == "nn_raw_pixels" and verdict["on"] == "test"
    assert verdict["mean_diff"] == pytest.approx(0.5)
    low, high = verdict["ci95"]
    assert 0 < low < 0.5 < high
    assert verdict["line"] == (f"Beats every baseline: +50.0 points over nearest neighbour on raw pixels "
                               f"[{100 * low:+.1f}, {100 * high:+.1f}] on 10 test images")
    assert "teacher" not in verdict["line"], "the teacher is a reference, not a baseline to beat"

    loses = scoring.task_accuracy(_with_baselines([True] * 5 + [False] * 5, [True] * 8 + [False] * 2), 0, [], "tint")
    verdict = loses["verdict"]
    assert verdict["beats_baselines"] is False and verdict["closest"] == "nn_raw_pixels"
    assert verdict["line"].startswith("Does NOT beat nearest neighbour on raw pixels: -30.0 points [")
    assert "unlabeled images of your domain" in verdict["line"] and "sd_model_path" in verdict["line"]
    metrics = scoring.task_metrics(loses, {"latency_ms_batch_1": 1.0, "images_per_s_batch_64": 1.0})
    assert metrics["task.beats_baselines"]["value"] == 0.0
    assert metrics["task.margin_over_best_baseline"]["value"] == pytest.approx(-0.3)
    assert scoring.task_metrics(wins, {"latency_ms_batch_1": 1.0, "images_per_s_batch_64": 1.0})[
        "task.beats_baselines"]["value"] == 1.0

    only_tiny = scoring.task_accuracy(_with_baselines([True] * 5 + [False] * 5, [True] * 8 + [False] * 2), 0, [],
                                      "tint", to_beat=["supports_only"])
    assert only_tiny["verdict"]["beats_baselines"] is True and only_tiny["verdict"]["closest"] == "supports_only"

    tied = scoring.task_accuracy(_with_baselines([True] * 5 + [False] * 5, [True] * 5 + [False] * 5), 0, [], "tint")
    assert tied["verdict"]["beats_baselines"] is False, "a tie does not beat"


def test_the_verdict_uses_the_held_out_images_without_a_test_folder():
    correct = {0: {"tint": [], "supports_only": [], "nn_raw_pixels": [], "teacher": []},
               1: {"tint": [True, True], "supports_only": [True, False], "nn_raw_pixels": [False, False],
                   "teacher": [True, True]},
               2: {"tint": [True], "supports_only": [False], "nn_raw_pixels": [True], "teacher": [True]}}
    verdict = scoring.task_accuracy(correct, 0, [1, 2], "tint")["verdict"]
    assert verdict["on"] == "leave_out" and verdict["beats_baselines"] is True
    assert verdict["closest"] == "supports_only" and "on 3 held-out images (2 folds)" in verdict["line"]
    assert verdict["line"].endswith("(the interval includes 0: not a clear margin)")


def test_no_held_out_split_and_no_test_folder_means_no_estimate():
    estimate = scoring.task_accuracy({0: {"teacher": [], "tint": []}}, 0, [], "tint")
    assert estimate["leave_out"] is None and estimate["test"] is None and estimate["verdict"]["beats_baselines"] is None
    assert accuracy_lines(estimate) == ["no estimate: every class has one labelled image and there is no test folder"]
    assert "task.beats_baselines" not in scoring.task_metrics(estimate, {"latency_ms_batch_1": 1.0,
                                                                         "images_per_s_batch_64": 1.0})


def test_evaluation_block_checks_its_nested_blocks():
    settings = EvaluationSettings(planner={"methods": ["tint"]}, logged_model={"method": None})
    assert settings.planner == PlannerSettings(methods=("tint",)) and settings.logged_model.method is None
    with pytest.raises(ParameterError, match=r"'evaluation\.planner\.target_half_widths' must be in \(0, 1\)"):
        settings_from_params(EvaluationSettings, {"planner": {"target_half_widths": [2]}}, "evaluation")
    with pytest.raises(ParameterError, match=r"'evaluation\.logged_model\.method' must be one of"):
        settings_from_params(EvaluationSettings, {"logged_model": {"method": "magic"}}, "evaluation")


def test_results_table_is_one_row_of_the_papers_table_with_its_cost():
    from tint_distill.evaluation.reports import results_table

    costs = pd.DataFrame([{"stage": "students", "partition": f"tint/episode_{e:04d}", "episode": e, "seconds": 36.0,
                           "device": "cuda", "host": "h"} for e in range(3)])
    summary = scoring.summarise(table(), {"student_speedup": 1.0}, costs, [["tint", "supports_only"]],
                                PlannerSettings(methods=("tint",), target_half_widths=(0.01,)))
    text = results_table(summary, "mini_imagenet", 5, 1)
    header, rule, row = text.splitlines()[:3]
    assert header.split(" | ")[3:5] == ["supports_only", "tint"], "the baseline first, as in the paper"
    assert row.startswith("| mini_imagenet | 5-way 1-shot | 3 | 50.0 ± ")
    half = 100 * T_975_2 * math.sqrt(0.03) / math.sqrt(3)
    assert row.endswith(f"| +20.0 [{20 - half:+.1f}, {20 + half:+.1f}] |")
    episodes = summary["cost_plan"]["targets"][0]["episodes"]
    assert f"needs {episodes} episodes: {episodes * 36 / 3600:.3g} device-hours" in text and "(cuda)" in text


def test_cost_plan_title_fits_in_its_figure_with_every_stage():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tint_distill.evaluation.reports import plot_cost_plan

    stages = ("specialisation", "synthesis", "teacher", "students", "mined_real_features", "mined_real_search")
    costs = pd.DataFrame([{"stage": stage, "partition": f"tint/episode_{e:04d}", "episode": e, "seconds": 1234.5,
                           "device": "cuda", "host": "h"} for stage in stages for e in range(3)])
    summary = scoring.summarise(table(), {"student_speedup": 1.0}, costs, [["tint", "supports_only"]],
                                PlannerSettings(methods=("tint",), target_half_widths=(0.01, 0.02)))
    figure = plot_cost_plan(summary)
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)  # constrained layout places the title as the saved PNG has it
    title = figure.axes[0].title
    box, page = title.get_window_extent(renderer), figure.bbox
    assert "mined_real_search 1234.5" in title.get_text()
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, "the whole title is on the figure"


def test_a_student_losing_to_the_teachers_features_is_told_that_a_nearest_neighbour_on_them_is_better():
    correct = _with_baselines([True] * 5 + [False] * 5, [False] * 10)
    correct[0]["nn_teacher_features"] = [True] * 9 + [False]
    verdict = scoring.task_accuracy(correct, 0, [], "tint")["verdict"]
    assert verdict["beats_baselines"] is False and verdict["closest"] == "nn_teacher_features"
    assert "a nearest neighbour on its features is the better model" in verdict["line"]
    raw = scoring.task_accuracy(_with_baselines([True] * 5 + [False] * 5, [True] * 8 + [False] * 2), 0, [], "tint")
    assert "nearest neighbour on its features" not in raw["verdict"]["line"]
