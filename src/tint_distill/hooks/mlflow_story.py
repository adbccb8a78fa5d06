"""Each MLflow run says what it was and what it found."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.framework.hooks import hook_impl

from tint_distill.execution import UNIT_CLOCK
from tint_distill.run_story import (
    RUNS_TABLE_VIEW, duration_table, git_state, plot_durations, run_name, run_page, runs_table_view,
)

logger = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the view's key: a saved state of the UI's runs table
ACCURACY_CHART = "accuracy_plot"  # the catalog's chart of accuracy per method, shown in the run's Description
TIMING_FOLDER = "timing"  # the run's artifacts: time per node on one scale, as a chart and a table


class MlflowRunStory:
    """Makes each MLflow run readable: a name that leads with what differs (pipeline or "full run",
    data source, env, N-way K-shot, episodes, every ``--params`` override, then the time), tags for
    the pipeline, data source, env, runner and git commit, a description with the headline
    accuracies and, inline, the accuracy-per-method chart and the time per node on one scale,
    the experiment's runs-table view with the headline metrics first, the episodes table as the
    run's input dataset, the wall time of every stage (including the work a resumable output does
    while it is saved) with the seconds its units computed (``unit_s.<node>``; the rest is the
    driver's) and the generator's training record. Works inside the run kedro-mlflow opens, so it
    does nothing when MLflow tracking is off."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._started: dict[str, float] = {}
        self._finished: dict[str, float] = {}
        self._unit_seconds: dict[str, tuple[float, float]] = {}  # node -> the unit clock at its start, at its end
        self._summary: dict | None = None
        self._charted = False  # the accuracy chart was saved (logged) in this run
        self._episodes_logged = False
        self._run_started = time.perf_counter()

    @staticmethod
    def _active():
        import mlflow

        return mlflow if mlflow.active_run() is not None else None

    @hook_impl(trylast=True)  # after kedro-mlflow has opened the run and set its own tags
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:
        self._reset()
        mlflow = self._active()
        if mlflow is None:
            return
        from tint_distill.params import as_plain
        from tint_distill.pipelines.parameters import blocks_read_by

        pipelines = sorted(run_params.get("pipeline_names") or ["__default__"])  # Kedro passes them unordered
        parameters = as_plain(catalog.load("parameters"))
        name = run_name(pipelines, run_params.get("env"), parameters, blocks_read_by(pipeline.inputs()), datetime.now(),
                        run_params.get("runtime_params"))
        runner = re.search(r"([A-Za-z_]\w*) object at", str(run_params.get("runner", "")))
        tags = {"mlflow.runName": name, "pipeline": "+".join(pipelines), "env": run_params.get("env") or "local",
                "data_source": parameters.get("data_source") or "drawings",
                "runner": runner.group(1) if runner else str(run_params.get("runner"))}
        git = git_state(run_params["project_path"])
        if git:
            tags.update({"mlflow.source.git.commit": git["commit"], "git_commit": git["commit"], "git_dirty": git["dirty"]})
        mlflow.set_tags(tags)
        experiment_id = mlflow.active_run().info.experiment_id
        client = mlflow.MlflowClient()
        experiment_tags = client.get_experiment(experiment_id).tags
        view = json.dumps(runs_table_view())
        for key, value in ((EXPERIMENT_KIND_TAG, EXPERIMENT_KIND),  # UI: opens on the runs table
                           (SHARED_VIEW_TAG + RUNS_TABLE_VIEW, view)):  # ?viewStateShareKey=headline
            if experiment_tags.get(key) != value:
                client.set_experiment_tag(experiment_id, key, value)

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._started[node.name] = time.perf_counter()
        self._unit_seconds[node.name] = (UNIT_CLOCK.seconds, UNIT_CLOCK.seconds)

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        self._finished[node.name] = time.perf_counter()
        self._unit_seconds[node.name] = (self._unit_seconds[node.name][0], UNIT_CLOCK.seconds)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if node is not None:  # a node's time includes saving its outputs (an MLflow upload, say)
            self._finished[node.name] = time.perf_counter()
        if dataset_name == "evaluation_summary":
            self._summary = data
        self._charted |= dataset_name == ACCURACY_CHART
        if dataset_name == "episodes":
            self._log_episodes(data)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        if dataset_name == "episodes":
            self._log_episodes(data)

    def _log_episodes(self, table: Any) -> None:
        mlflow = self._active()
        if mlflow is None or self._episodes_logged:
            return
        import mlflow.data

        mlflow.log_input(mlflow.data.from_pandas(table, name="episodes"), context="episodes")
        self._episodes_logged = True

    @hook_impl(tryfirst=True)  # before kedro-mlflow closes the run
    def after_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:
        self._finish(pipeline, catalog)

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Exception, run_params: dict, pipeline: Any, catalog: Any) -> None:
        self._finish(pipeline, catalog)

    def _finish(self, pipeline: Any, catalog: Any) -> None:
        mlflow = self._active()
        if mlflow is None:
            return
        total = time.perf_counter() - self._run_started
        table = duration_table(self._started, self._finished, self._unit_seconds)
        durations = {"duration_s.total": total, **{f"duration_s.{row.node}": row.seconds for row in table.itertuples()},
                     # the units' own computation within each node that ran any (the rest of its time is the driver's)
                     **{f"unit_s.{row.node}": row.unit_seconds for row in table.itertuples() if row.unit_seconds > 0}}
        mlflow.log_metrics(durations)
        images = []
        if self._charted:
            chart = catalog.get(ACCURACY_CHART)
            images.append((f"{chart.artifact_path}/{PurePosixPath(chart._filepath).name}",
                           "Accuracy per method, 95% CI"))
        if not table.empty:  # every node on one scale, where the metrics' charts each have their own
            mlflow.log_table(table, f"{TIMING_FOLDER}/time_per_node.json")
            mlflow.log_figure(plot_durations(table, total), f"{TIMING_FOLDER}/time_per_node.png")
            images.append((f"{TIMING_FOLDER}/time_per_node.png", "Time per node"))
        run = mlflow.active_run().info
        mlflow.set_tag("mlflow.note.content", run_page(self._summary, run.run_id, run.experiment_id, images))
        if "generator" in pipeline.all_outputs() | pipeline.inputs():
            from tint_distill.tint.models import TRAINING_RECORD  # imports torch: not at startup

            record = Path(catalog.get("generator").path) / TRAINING_RECORD
            if record.is_file():
                mlflow.log_artifact(str(record), "generator")
