"""The ``evaluation`` pipeline, as Kedro runs it, on teacher outputs and student results held in memory
(the speed and model-logging nodes need the teacher's weights: not part of this slice)."""

from __future__ import annotations

import math

import pytest
import torch
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from kedro_datasets.pickle import PickleDataset
from matplotlib.figure import Figure

from tint_distill.evaluation.scoring import PlannerSettings
from tint_distill.pipelines.evaluation import create_pipeline

T_975_1 = 12.706204736174698  # Student t, 97.5% quantile, 1 degree of freedom

SLICE = ["collect_episode_accuracies", "collect_unit_costs", "summarise_evaluation", "plot_accuracy",
         "plot_speed_accuracy", "plot_cost_plan", "log_evaluation_metrics",
         "write_results_table"]


class Unit:
    """A partition's load function with the marker record the cost plan reads, as the resumable
    partitioned datasets give them."""

    def __init__(self, value: dict, seconds: float):
        self.value, self.record = value, {"seconds": seconds, "device": "cpu", "host": "here"}

    def __call__(self) -> dict:
        return self.value


def partitions():
    labels = torch.tensor([0, 0, 1, 1])
    teacher = {  # episode 0: 4 of 4 right; episode 1: 3 of 4
        "episode_0000": lambda: {"query_labels": labels, "query_logits": torch.tensor([[1.0, 0], [2, 0], [0, 1], [0, 3]])},
        "episode_0001": lambda: {"query_labels": labels, "query_logits": torch.tensor([[1.0, 0], [0, 2], [0, 1], [0, 3]])},
    }

    def result(method, episode, accuracy, losses):
        return Unit({"method": method, "episode": episode, "accuracy": accuracy, "n_queries": 4, "n_way": 2,
                             "n_unlabeled": 8, "teacher_agreement_on_unlabeled": 0.5, "query_predictions": [0, 0, 1, 1],
                             "history": [{"epoch": e + 1, "loss": v} for e, v in enumerate(losses)]}, 10.0)

    students = {"tint/episode_0000": result("tint", 0, 0.75, [2.0, 1.0]),
                "tint/episode_0001": result("tint", 1, 0.5, [3.0, 1.0]),
                "supports_only/episode_0000": result("supports_only", 0, 0.5, [1.0, 0.5]),
                "supports_only/episode_0001": result("supports_only", 1, 0.5, [1.0, 0.5])}
    return teacher, students


def run(folder, **params) -> dict:
    teacher, students = partitions()
    summary = PickleDataset(filepath=str(folder / "evaluation_summary.pkl"))  # kept: the plots read it too
    catalog = DataCatalog({"evaluation_summary": summary})
    inputs = {
        "student_results": students, "teacher_outputs": teacher, "class_specialisations": {}, "synthetic_images": {},
        "speed_report": {"teacher": {"images_per_s": 50.0, "parameters": 4_650_000},
                         "student": {"images_per_s": 1000.0, "parameters": 1_260_000}, "student_speedup": 20.0},
        "inversion_report": {"summary": {"psnr": 30.0}},
        "params:evaluation.comparisons": [["tint", "supports_only"], ["teacher", "tint"]],
        "params:evaluation.planner": PlannerSettings(methods=("tint",), target_half_widths=(0.05,), workers=(1, 4)),
        "params:evaluation.log_episode_loss_curves": False,
        "params:data_source": "drawings", "params:data_episodes.sampling.n_way": 2,
        "params:data_episodes.sampling.n_shot": 1,
        **{f"params:evaluation.{k}": v for k, v in params.items()},
    }
    for name, value in inputs.items():
        catalog[name] = value
    pipeline = create_pipeline().only_nodes(*SLICE)
    assert pipeline.inputs() <= set(inputs), pipeline.inputs() - set(inputs)
    outputs = SequentialRunner().run(pipeline, catalog)
    loaded = {name: dataset.load() if hasattr(dataset, "load") else dataset for name, dataset in outputs.items()}
    return {**loaded, "evaluation_summary": summary.load()}


def test_summary_metrics_and_plots(tmp_path):
    out = run(tmp_path)
    summary = out["evaluation_summary"]
    assert summary["methods"]["teacher"]["accuracy"] == pytest.approx(0.875)
    assert summary["methods"]["tint"]["accuracy"] == pytest.approx(0.625)
    assert summary["methods"]["tint"]["ci95"] == pytest.approx(T_975_1 * math.sqrt(0.03125) / math.sqrt(2))
    assert summary["comparisons"]["teacher_vs_tint"]["mean_diff"] == pytest.approx(0.25)
    assert summary["inversion"] == {"psnr": 30.0}
    plan = summary["cost_plan"]
    assert plan["per_episode_s"]["total"] == pytest.approx(20.0)  # two students of 10 s per episode
    assert [t["wall_hours"]["4"] for t in plan["targets"]] == pytest.approx(
        [t["device_hours"] / 4 for t in plan["targets"]])
    metrics = out["evaluation_metrics"]
    assert metrics["accuracy.tint"]["value"] == pytest.approx(0.625)
    assert metrics["loss.tint.mean"] == [{"value": 2.5, "step": 1}, {"value": 1.0, "step": 2}]
    assert metrics["speed.student_speedup"]["value"] == 20.0
    assert metrics["plan.device_s_per_episode"]["value"] == pytest.approx(20.0)
    assert not any(name.startswith("loss.tint.episode") for name in metrics)
    assert all(isinstance(out[name], Figure) for name in ("accuracy_plot", "speed_accuracy_plot", "cost_plan_plot"))
    row = out["results_table"].splitlines()[2]  # header, rule, the run's row
    # supports_only, tint, teacher, then tint - supports_only
    assert row.startswith("| drawings | 2-way 1-shot | 2 | 50.0 ± 0.0 | 62.5 ± ") and "| +12.5 [" in row, row
    assert "loss.tint.episode_0001" in run(tmp_path, log_episode_loss_curves=True)["evaluation_metrics"]
