"""Kedro project settings: https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

import logging
import warnings

# Two warnings about the installed libraries, not about a run, printed (about 25 lines) by every
# `kedro` command: Kedro's config loader calls OmegaConf's deprecated register_new_resolver, and
# kedro-mlflow's pipeline model has no type hints. Kedro reads these settings before it loads its
# plugins, so the filters are in place before either is raised. MLflow resets the warning filters
# around its check, so that one is dropped where Kedro logs warnings (logger ``py.warnings``).
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
logging.getLogger("py.warnings").addFilter(
    lambda record: "Add type hints to the `predict` method" not in record.getMessage())

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
