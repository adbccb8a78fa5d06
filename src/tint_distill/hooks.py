"""Project hooks: a run checks its settings and inputs and takes the project's run lock before
any stage works, so bad settings cost nothing and two runs never write the same outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tint_distill.locks import FileLock, ProjectBusyError

logger = logging.getLogger(__name__)

RUN_LOCK = "data/.run.lock"          # held for a whole `kedro run`
STARTUP_LOCK = "data/.startup.lock"  # held while a session sets up (MLflow creates its store then)


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
            yield
        finally:
            lock.release()

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict, pipeline: Any, catalog: Any) -> None:
        from tint_distill.pipelines.parameters import blocks_read_by, check_parameters  # imports torch: not at startup

        check_parameters(catalog.load("parameters"), blocks_read_by(pipeline.inputs()))
        if "generator" in pipeline.inputs():  # a model the run reads and does not make: check it now
            catalog.get("generator").load()  # ModelFolderError names the folder and what to do
        lock = FileLock(Path(run_params["project_path"]) / RUN_LOCK)
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

    @hook_impl
    def after_pipeline_run(self, run_params: dict, run_result: Any, pipeline: Any, catalog: Any) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict, pipeline: Any, catalog: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None
