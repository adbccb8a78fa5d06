"""Kedro-Viz as the README describes it, built with its own Python API (what `kedro viz build`
writes, without the files): every dataset in a layer, layers in one order without a cycle, and
folder datasets sized by their files. The previews of a real run are checked in
test_end_to_end (`kedro viz build --include-previews`)."""

from __future__ import annotations

import logging

import pytest
from kedro_viz.data_access import data_access_manager
from kedro_viz.integrations.kedro import data_loader
from kedro_viz.integrations.kedro.hooks_utils import compute_size
from kedro_viz.models.flowchart.nodes import DataNode
from kedro_viz.server import populate_data

from tests.conftest import PROJECT_ROOT
from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.work import Work

# The README's layers, in the order a run goes through them.
LAYERS = ["raw", "intermediate", "pretrained_models", "primary", "feature", "model_input", "models", "model_output",
          "reporting"]


@pytest.fixture(scope="module", params=["local", "test"])
def kedro_viz(request):
    """Kedro-Viz's data for every registered pipeline of an environment, as `kedro viz build` makes it."""
    catalog, pipelines, extras = data_loader.load_data(PROJECT_ROOT, request.param)
    data_access_manager.reset_fields()
    populate_data(data_access_manager, catalog, pipelines, extras)
    yield pipelines
    data_access_manager.reset_fields()


def test_every_pipeline_shows_every_dataset_in_a_layer_without_a_cycle(kedro_viz, caplog):
    for pipeline in kedro_viz:
        with caplog.at_level(logging.WARNING, logger="kedro_viz"):
            layers = data_access_manager.get_sorted_layers_for_registered_pipeline(pipeline)
        assert "circular" not in caplog.text, caplog.text
        assert layers, f"{pipeline}: Kedro-Viz disables its layers when they form a cycle"
        nodes = data_access_manager.get_nodes_for_registered_pipeline(pipeline)
        datasets = [n for n in nodes if isinstance(n, DataNode)]
        assert datasets and not [d.name for d in datasets if not d.layer], f"{pipeline}: datasets without a layer"
        layer = {d.name: d.layer for d in datasets}
        assert set(layer.values()) <= set(LAYERS), f"{pipeline}: layers the README does not list"
        backwards = [f"{i} ({layer[i]}) -> {o} ({layer[o]})" for node in kedro_viz[pipeline].nodes
                     for i in node.inputs if i in layer for o in node.outputs
                     if LAYERS.index(layer[i]) > LAYERS.index(layer[o])]
        assert not backwards, f"{pipeline}: a node's output in an earlier layer than its input: {backwards}"
    assert {"__default__", "experiment", "task", "predict", "generator_pretraining", "student_pretraining"} <= set(
        kedro_viz)


def test_kedro_viz_sizes_a_partitioned_dataset_as_its_files_total(tmp_path):
    store = ResumablePartitionedDataset(path=str(tmp_path / "parts"), dataset="json.JSONDataset",
                                        filename_suffix=".json")
    store.save(Work.of_functions({f"tint/episode_{e:04d}": (str(e), lambda e=e: {"accuracy": e / 10})
                                  for e in range(3)}))
    files = sum(p.stat().st_size for p in (tmp_path / "parts").rglob("*") if p.is_file())
    assert files > 0 and compute_size("students", {"students": store}) == files, "not 0 B, not a directory entry"
