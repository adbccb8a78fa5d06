"""What a run says about itself in MLflow: names that tell runs apart, the runs table's headline
view, the Description's charts and the time per node."""

from __future__ import annotations

from datetime import datetime

import pytest

from tint_distill.run_story import (
    HEADLINE_METRICS, duration_table, flat_overrides, run_name, run_page, runs_table_view, short_override,
)

PARAMS = {"data_episodes": {"sampling": {"n_way": 5, "n_shot": 5, "n_episodes": 20}}}
STARTED = datetime(2026, 11, 22, 6, 10)


def test_the_name_leads_with_what_differs_and_every_override():
    """The README's two 20-episode commands differ by their override, not only by the time."""
    overrides = {"data_episodes": {"sampling": {"n_episodes": 20}}, "student": {"init": "scratch"}}
    first = run_name(["__default__"], None, PARAMS, {"data_episodes"}, STARTED,
                     {"data_episodes": {"sampling": {"n_episodes": 20}}})
    second = run_name(["experiment"], None, PARAMS, {"data_episodes"}, STARTED, overrides)
    assert first == "full run · local · 5-way 5-shot · 20 episodes · 11-22 06:10"
    assert second == "experiment · local · 5-way 5-shot · 20 episodes · student.init=scratch · 11-22 06:10"


def test_overrides_are_shortened_and_a_data_source_is_named():
    overrides = {"data_source": "cub", "raw_path": "/data/benchmarks/CUB_200_2011/", "synthesis": {"alpha": 0.25},
                 "data_episodes": {"sampling": {"n_queries": 5}}, "methods": ["tint", "supports_only"],
                 "execution": {"engine": "ray"}}
    name = run_name(["distillation", "evaluation"], "gpu", {**PARAMS, "data_source": "cub"}, {"data_episodes"},
                    STARTED, overrides)
    assert name == ("distillation+evaluation · cub · gpu · 5-way 5-shot · 20 episodes · raw_path=CUB_200_2011 · "
                    "synthesis.alpha=0.25 · sampling.n_queries=5 · methods=[tint,supports_only] · "
                    "execution.engine=ray · 11-22 06:10")
    assert short_override("task.registered_model_name", "a_very_long_model_registry_name") == \
        "task.registered_model_name=a_very_long_model_regis…"
    # a run that does not read the episodes keeps its episode overrides in the name
    assert run_name(["inversion"], "test", PARAMS, set(), STARTED, {"data_episodes": {"sampling": {"n_shot": 1}}}) == \
        "inversion · test · sampling.n_shot=1 · 11-22 06:10"


def test_flat_overrides_keep_the_order_given():
    assert list(flat_overrides({"b": {"y": 1, "x": {"z": 2}}, "a": 3})) == ["b.y", "b.x.z", "a"]
    assert flat_overrides(None) == {}


def test_the_headline_view_puts_the_metrics_first():
    view = runs_table_view()
    columns = [f"metrics.`{name}`" for name in HEADLINE_METRICS]
    assert view["columnOrder"] == ["attributes.`Run Name`", *columns]
    assert view["selectedColumns"][:4] == columns
    assert HEADLINE_METRICS == ("accuracy.tint", "diff.tint_vs_supports_only", "ci95.tint", "duration_s.total")


def test_the_description_shows_the_charts_and_links_the_headline_view():
    summary = {"methods": {"tint": {"accuracy": 0.5, "ci95": 0.1, "n_way": 3, "n_episodes": 3, "n_queries_per_class": 4}},
               "comparisons": {}}
    page = run_page(summary, "abc123", "7", [("evaluation/accuracy per method.png", "Accuracy")])
    assert "| tint | 50.0% ± 10.0 |" in page
    assert "![Accuracy](get-artifact?path=evaluation%2Faccuracy%20per%20method.png&run_uuid=abc123)" in page
    assert "(#/experiments/7/runs?viewStateShareKey=headline&workflowType=machine_learning)" in page
    assert run_page(None, "abc123", "7", []).startswith("[All runs")


def test_the_duration_table_lists_nodes_in_the_order_they_started():
    table = duration_table({"b.second": 5.0, "a.first": 1.0, "c.unfinished": 9.0}, {"a.first": 3.5, "b.second": 6.0},
                           {"a.first": (10.0, 12.0), "b.second": (12.0, 12.0)})
    assert table["node"].tolist() == ["a.first", "b.second"]
    assert table["seconds"].tolist() == pytest.approx([2.5, 1.0])
    assert table["unit_seconds"].tolist() == pytest.approx([2.0, 0.0])
