"""Project hooks: a run checks its settings and inputs and takes the project's run lock before
any stage works, so bad settings cost nothing and two runs never write the same outputs; and
its MLflow run says what it was and what it found."""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tint_distill.execution import shutdown_ray
from tint_distill.locks import FileLock, FolderLock, ProjectBusyError
from tint_distill.run_story import git_state, run_description, run_name
from tint_distill.work import ALREADY_SAVED

logger = logging.getLogger(__name__)

RUN_LOCK = "data/.run.lock"          # a `kedro run` locks data/ itself; this file says who holds it
STARTUP_LOCK = "data/.startup.lock"  # held while a session sets up (MLflow creates its store then)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class RunGuard:
    """Checks before a run, and one run at a time per project."""

    def __init__(self) -> None:
        self._run_lock: FileLock | None = None

    @hook_impl(hookwrapper=True)
    def after_context_created(self, context: Any):
        """Sessions of one project set up one after another: two first runs would otherwise both
        create the MLflow store (``mlflow.db``) and one of them crash."""
        lock = FileLock(Path(context.project_path) / STARTUP_LOCK)
        if not lock.acquire({"what": "session setup"}, timeout=120):
            logger.warning("Another Kedro session of this project is still setting up after 120 s; going on.")
        try:
            self._check_tracking_store(context)  # before kedro-mlflow opens it
            yield
        finally:
            lock.release()

    @staticmethod
    def _check_tracking_store(context: Any) -> None:
        from kedro.config import MissingConfigException

        from tint_distill.tracking_store import check_sqlite_store, sqlite_store_path

        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])  # as kedro-mlflow does
        try:
            uri = (loader["mlflow"].get("server") or {}).get("mlflow_tracking_uri")
        except MissingConfigException:
            return
        path = sqlite_store_path(uri, context.project_path)
        if path is not None:
            check_sqlite_store(path)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:
        from tint_distill.pipelines.parameters import blocks_read_by, check_parameters  # imports torch: not at startup

        check_parameters(catalog.load("parameters"), blocks_read_by(pipeline.inputs()))
        if "generator" in pipeline.inputs():  # a model the run reads and does not make: check it now
            self._check_generator(catalog.get("generator"), run_params.get("env"))
        self._check_base_student(pipeline, catalog, run_params.get("env"))
        lock = FolderLock(Path(run_params["project_path"]) / RUN_LOCK)
        description = {"pipelines": run_params.get("pipeline_names"), "env": run_params.get("env")}
        if not lock.try_acquire(description):
            holder = lock.holder()
            raise ProjectBusyError(
                f"another `kedro run` is using this project's outputs (pid {holder.get('pid', '?')}, pipelines "
                f"{holder.get('pipelines')}, env {holder.get('env')}, since {holder.get('since', '?')}); wait for it "
                f"to finish or stop it, then run again. Two experiments at once need two copies of the project. "
                f"(lock: {lock.path})"
            )
        self._run_lock = lock

    @staticmethod
    def _check_generator(dataset: Any, env: str | None) -> None:
        """The generator folder exists and is complete; a missing one that a pipeline of this project
        trains (not a read-only Stable Diffusion folder) gets the command that trains it."""
        from tint_distill.tint.errors import ModelFolderError

        try:
            dataset.load()  # ModelFolderError (Kedro wraps it) names the folder and what it must hold
        except Exception as error:
            cause = error if isinstance(error, ModelFolderError) else error.__cause__
            if not isinstance(cause, ModelFolderError) or getattr(dataset, "read_only", True) or dataset.path.exists():
                raise
            raise ModelFolderError(
                f"{cause}; this environment trains its own: run `kedro run --pipeline generator_pretraining"
                f"{f' --env {env}' if env else ''}` first (or a pipeline that includes it, such as the default)"
            ) from error

    @staticmethod
    def _check_base_student(pipeline: Any, catalog: Any, env: str | None) -> None:
        """The students start from the base-class student but the run neither has nor makes one:
        say so now, not after inversion and synthesis."""
        from tint_distill.params import ParameterError

        student = catalog.load("parameters").get("student") or {}
        if "base_student" not in pipeline.inputs() or student.get("init", "base_classes") != "base_classes":
            return
        dataset = catalog.get("base_student")
        if dataset.load() is None:
            where = getattr(dataset, "filepath", "base_student")
            raise ParameterError(
                f"student.init is base_classes, but there is no base-class student at {where}: run `kedro run "
                f"--pipeline student_pretraining{f' --env {env}' if env else ''}` first (or a pipeline that "
                "includes it, such as the default), or set student.init: scratch.")

    @hook_impl
    def after_pipeline_run(self, run_params: dict, run_result: Any, pipeline: Any, catalog: Any) -> None:
        from tint_distill.datasets import ResumablePartitionedDataset

        try:  # the whole pipeline ran: its partitions become each store's last complete run (prune keeps them)
            for name in sorted(pipeline.all_outputs()):
                dataset = catalog.get(name) if name in catalog else None
                if isinstance(dataset, ResumablePartitionedDataset):
                    dataset.complete_run()
        finally:
            self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict, pipeline: Any, catalog: Any) -> None:
        self._release()

    def _release(self) -> None:
        if shutdown_ray(only_if_engine_started=True):  # a cluster this run started stops; a joined one is left
            logger.info("Ray shut down")
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None


class WorkInsideTheNode:
    """The expensive stages' nodes only plan their work (``Deferred``s); their outputs' datasets
    (those with ``does_work_on_save``: the resumable partitions, the generator) do it while Kedro
    saves them, after Kedro and Kedro-Viz have stopped the node's clock. This hook saves such
    outputs at the end of the node instead, so the run view and the logs show each node taking
    the time it takes; Kedro's own save that follows is a no-op."""

    @hook_impl(tryfirst=True)  # before Kedro-Viz's hook reads the node's duration
    def after_node_run(self, node: Any, catalog: Any, outputs: dict) -> None:
        for name, value in outputs.items():
            if value is not ALREADY_SAVED and name in catalog and getattr(catalog.get(name), "does_work_on_save", False):
                catalog.save(name, value)
                outputs[name] = ALREADY_SAVED


class MlflowRunStory:
    """Makes each MLflow run readable: a name that says what ran (pipeline, env, N-way K-shot,
    episodes, alpha, time), tags for the pipeline, env, runner and git commit, a description with
    the headline accuracies, the episodes table as the run's input dataset, the wall time of
    every stage (including the work a resumable output does while it is saved) and the
    generator's training record. Works inside the run kedro-mlflow opens, so it does nothing when
    MLflow tracking is off."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._started: dict[str, float] = {}
        self._finished: dict[str, float] = {}
        self._summary: dict | None = None
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
        from tint_distill.pipelines.parameters import blocks_read_by

        pipelines = sorted(run_params.get("pipeline_names") or ["__default__"])  # Kedro passes them unordered
        name = run_name(pipelines, run_params.get("env"), catalog.load("parameters"),
                        blocks_read_by(pipeline.inputs()), datetime.now())
        runner = re.search(r"([A-Za-z_]\w*) object at", str(run_params.get("runner", "")))
        tags = {"mlflow.runName": name, "pipeline": "+".join(pipelines), "env": run_params.get("env") or "local",
                "runner": runner.group(1) if runner else str(run_params.get("runner"))}
        git = git_state(run_params["project_path"])
        if git:
            tags.update({"mlflow.source.git.commit": git["commit"], "git_commit": git["commit"], "git_dirty": git["dirty"]})
        mlflow.set_tags(tags)
        experiment_id = mlflow.active_run().info.experiment_id
        client = mlflow.MlflowClient()
        if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)  # UI: the runs table

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        self._finished[node.name] = time.perf_counter()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if node is not None:  # a node's time includes saving its outputs (an MLflow upload, say)
            self._finished[node.name] = time.perf_counter()
        if dataset_name == "evaluation_summary":
            self._summary = data
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
        durations = {f"duration_s.{name}": end - self._started[name]
                     for name, end in self._finished.items() if name in self._started}
        durations["duration_s.total"] = time.perf_counter() - self._run_started
        mlflow.log_metrics(durations)
        if self._summary:
            mlflow.set_tag("mlflow.note.content", run_description(self._summary))
        if "generator" in pipeline.all_outputs() | pipeline.inputs():
            from tint_distill.tint.models import TRAINING_RECORD  # imports torch: not at startup

            record = Path(catalog.get("generator").path) / TRAINING_RECORD
            if record.is_file():
                mlflow.log_artifact(str(record), "generator")
