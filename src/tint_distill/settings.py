"""Kedro project settings: https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from tint_distill.config_loader import DataSourceConfigLoader
from tint_distill.hooks import MlflowRunStory, NodeClock, PlainParameters, RunGuard

# base < conf/data_sources/<data_source>/ (--params data_source=...) < the environment (--env) < --params
CONFIG_LOADER_CLASS = DataSourceConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # A data source or an environment (conf/test, conf/gpu, ...) states only the values it changes.
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}

# Settings and model folder checked, and the project's run lock taken, before any stage works;
# resumable work done inside its node's clock; MLflow runs named, tagged, described, timed per stage.
HOOKS = (RunGuard(), NodeClock(), PlainParameters(), MlflowRunStory())
