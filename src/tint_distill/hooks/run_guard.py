"""A run checks its settings and inputs and takes the project's run lock before any stage works,
so bad settings cost nothing and two runs never write the same outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tint_distill.errors import PriorOutputMissingError
from tint_distill.execution import shutdown_ray
from tint_distill.locks import FileLock, FolderLock, ProjectBusyError

logger = logging.getLogger(__name__)

RUN_LOCK = "data/.run.lock"          # a `kedro run` locks data/ itself; this file says who holds it
STARTUP_LOCK = "data/.startup.lock"  # held while a session sets up (MLflow creates its store then)

# The user's own folders that a run reads, checked before the run starts (RunGuard._check_user_folder),
# with the node that checks each one's contents, cheap enough to run twice (None: listing it is the check).
USER_FOLDERS = {"task.raw_images": "task.prepare.prepare_task", "predict_images": None}

# What a pipeline needs on the command line besides the run's own options (for the commands errors give).
PIPELINE_PARAMS = {"task": "task_path=<your task folder>"}


def quiet_load(catalog: Any, name: str) -> Any:
    """``catalog.load(name)`` without Kedro's "Loading data from ..." line: the checks read before the
    run, and their reads would be most of what a stopped run prints."""
    return catalog.get(name).load()


def run_options(run_params: dict, catalog: Any) -> str:
    """The options that choose this run's models (`` --env test --params data_source=cub``), for the
    commands an error asks to run: those train the very models this run reads."""
    env = run_params.get("env")
    source = (quiet_load(catalog, "parameters") or {}).get("data_source") if "parameters" in catalog else None
    return (f" --env {env}" if env else "") + (f" --params data_source={source}" if source and source != "drawings" else "")


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
            self._check_parameters(context)
            yield
        finally:
            lock.release()

    @staticmethod
    def _check_parameters(context: Any) -> None:
        """Every parameter block, as written (with --params): an error names the parameter and what is
        wrong, before Kedro turns the blocks into the nodes' typed settings."""
        from kedro.config import MissingConfigException

        from tint_distill.pipelines.parameters import check_parameters  # imports torch: not at startup

        try:
            params = context.config_loader["parameters"]
        except MissingConfigException:
            return
        check_parameters(params)

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
        from tint_distill.pipelines.parameters import blocks_read_by, check_on_this_machine

        # every block was checked when the session started (after_context_created)
        check_on_this_machine(quiet_load(catalog, "parameters"), blocks_read_by(pipeline.inputs()))
        options = run_options(run_params, catalog)  # what the commands an error asks for must repeat
        self._check_prior_outputs(pipeline, catalog, options)
        for name, checking_node in USER_FOLDERS.items():
            if name in pipeline.inputs():
                self._check_user_folder(name, checking_node, pipeline, catalog)
        if "generator" in pipeline.inputs():  # a model the run reads and does not make: check it now
            self._check_generator(catalog.get("generator"), options)
        self._check_base_student(pipeline, catalog, options)
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
    def _check_generator(dataset: Any, options: str) -> None:
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
                f"{cause}; this environment trains its own: run `kedro run --pipelines generator_pretraining"
                f"{options}` first (or a pipeline that includes it, such as the default)"
            ) from error

    @staticmethod
    def _check_base_student(pipeline: Any, catalog: Any, options: str) -> None:
        """The students start from the base-class student but the run neither has nor makes one:
        say so now, not after inversion and synthesis (the same check as the students' own)."""
        from tint_distill.distill.student import StudentSettings
        from tint_distill.params import settings_from_params
        from tint_distill.stages.distillation import student_start

        if "base_student" not in pipeline.inputs():
            return
        settings = settings_from_params(StudentSettings, quiet_load(catalog, "parameters").get("student"), "student")
        dataset = catalog.get("base_student")
        student_start(settings, dataset.load(), options, str(getattr(dataset, "filepath", "")))

    @staticmethod
    def _check_user_folder(name: str, checking_node: str | None, pipeline: Any, catalog: Any) -> None:
        """A user's folder, read now (a missing, empty or unreadable one: the error names it and the fix),
        and its checking node run on it once if the run has it (the task's preparation decodes every image
        and checks the class names), so that a mistake in it stops the run before MLflow opens one. The
        node's outputs are dropped: the run makes them again, at the cost of reading the folder twice."""
        folder = quiet_load(catalog, name)
        nodes = [node for node in pipeline.nodes if node.name == checking_node]
        for node in nodes:  # its inputs: the folder and parameters, given as a list
            inputs = [folder if i == name else quiet_load(catalog, i) for i in node.inputs]
            logging.disable(logging.WARNING)  # what it logs, it logs again when it runs
            try:
                node.func(*inputs)
            finally:
                logging.disable(logging.NOTSET)

    @staticmethod
    def _check_prior_outputs(pipeline: Any, catalog: Any, options: str) -> None:
        """Every input that another pipeline of this project makes exists (the task's model before
        ``predict``); else the error names the pipeline and its command. The generator and the base
        student have checks of their own (the base student is not needed by every setting)."""
        from kedro.framework.project import pipelines

        for name in sorted(pipeline.inputs() - {"generator", "base_student"}):
            if name.startswith("params:") or name == "parameters" or name not in catalog:
                continue
            makers = [key for key, made in pipelines.items() if not key.startswith("__") and name in made.all_outputs()]
            if not makers:  # a raw input: the user's own data
                continue
            try:
                missing = not catalog.get(name).exists()
            except Exception:  # noqa: BLE001 - a dataset that cannot tell: its own load reports the problem
                continue
            if missing:
                maker = min(makers, key=lambda key: len(pipelines[key].nodes))
                extra = PIPELINE_PARAMS.get(maker)
                command = f"kedro run --pipelines {maker}{options}" + (
                    (("," if "--params" in options else " --params ") + extra) if extra else "")
                raise PriorOutputMissingError(
                    f"'{name}' does not exist yet: the {maker} pipeline makes it; run `{command}` first.")

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
