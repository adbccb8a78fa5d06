"""Cheap checks that keep the project coherent as it grows."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

from tint_distill.config_loader import DataSourceConfigLoader, data_sources
from tint_distill.settings import CONFIG_LOADER_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted(p.name for p in (PROJECT_ROOT / "conf").iterdir()
              if p.is_dir() and p.name not in ("base", "local", "data_sources"))
SOURCES = data_sources(PROJECT_ROOT / "conf")
# Every configuration a run can see: the default environment or one of ENVS, with each data source.
CONFIGURATIONS = [(env, source) for env in (None, *ENVS) for source in SOURCES]


@pytest.fixture(scope="module")
def registered():
    bootstrap_project(PROJECT_ROOT)
    return dict(pipelines)


def config(env: str | None = None, source: str | None = None, **runtime_params) -> "Configuration":
    """The configuration as `kedro run --env <env> --params data_source=<source>` sees it (base, that
    data source's folder, that environment, the runtime parameters)."""
    params = {**({"data_source": source} if source else {}), **runtime_params}
    return Configuration(env or "local", json.dumps(params, sort_keys=True))


@dataclass(frozen=True)
class Configuration:
    """``config(...)[key]``: a fresh copy of what the project's loader resolves for ``key``."""

    env: str
    runtime_params: str  # JSON: the cache's key

    def __getitem__(self, key: str) -> dict:
        return copy.deepcopy(_resolved(self.env, self.runtime_params, key))


@functools.cache  # each configuration resolved once per session: the tests only read it
def _resolved(env: str, runtime_params: str, key: str) -> dict:
    return DataSourceConfigLoader(str(PROJECT_ROOT / "conf"), env=env, runtime_params=json.loads(runtime_params),
                                  **CONFIG_LOADER_ARGS)[key]


def leaf_paths(tree: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths |= leaf_paths(value, f"{path}.") if isinstance(value, dict) and value else {path}
    return paths


def test_expected_pipelines_exist(registered):
    expected = {"generator_pretraining", "data_episodes", "inversion", "synthesis", "distillation", "evaluation",
                "tint", "experiment", "task", "predict"}
    assert expected | {"__default__"} <= set(registered)
    for name in ("tint", "experiment", "task"):
        assert "generator" not in registered[name].all_outputs(), (
            f"`{name}` runs with a user's generator and must not overwrite it"
        )
    assert "generator" in registered["generator_pretraining"].all_outputs()
    assert registered["__default__"].all_outputs() >= registered["experiment"].all_outputs()


def every_node(registered) -> list:
    return [node for pipeline in registered.values() for node in pipeline.nodes]


def test_a_task_writes_only_its_own_datasets(registered):
    experiment = registered["experiment"].all_outputs()
    assert all(name.startswith("task.") for name in registered["task"].all_outputs())
    assert not registered["task"].all_outputs() & experiment


def test_every_node_is_named_explicitly(registered):
    for node in every_node(registered):
        assert ":" not in node.name and "(" not in node.name, f"node {node.name!r} has no explicit name"


@pytest.mark.parametrize(("env", "source"), CONFIGURATIONS)
def test_every_parameter_is_used_by_some_node(registered, env, source):
    from tint_distill.pipelines.parameters import CONFIGURATION_CHOICES

    used = {i.removeprefix("params:") for n in every_node(registered) for i in n.inputs if i.startswith("params:")}
    used |= set(CONFIGURATION_CHOICES)  # read by the configuration loader
    declared = leaf_paths(config(env, source)["parameters"])
    unused = sorted(p for p in declared if not any(p == u or p.startswith(f"{u}.") for u in used))
    assert not unused, f"parameters no node reads (env {env or 'base'}, data source {source}): {unused}"


@pytest.mark.parametrize(("env", "source"), CONFIGURATIONS)
def test_environments_and_data_sources_only_override_existing_parameters(env, source):
    base = leaf_paths(config()["parameters"])
    overrides = {
        path for path in leaf_paths(config(env, source)["parameters"])
        if path not in base and not any(b.startswith(f"{path}.") for b in base)  # a block set to null is fine
    }
    assert not overrides, f"conf/{env} with {source} sets parameters that base does not declare: {sorted(overrides)}"


def test_no_dataset_is_an_accidental_memory_dataset(registered):
    catalog = config()["catalog"]
    datasets = {d for pipeline in registered.values() for d in pipeline.datasets()}
    implicit = sorted(d for d in datasets if not d.startswith("params:") and d not in catalog)
    assert not implicit, f"datasets missing from conf/base/catalog*.yml: {implicit}"


@pytest.mark.parametrize("env", [None, *ENVS])
@pytest.mark.parametrize(
    ("source", "dataset_type"),
    [("drawings", "ImageFolderDataset"), ("folder", "ImageFolderDataset"), ("mini_imagenet", "MiniImageNetDataset"),
     ("cub", "CUBDataset"), ("cifar_fs", "CIFARFSDataset")],
)
def test_the_data_source_selects_the_reader_whatever_the_environment(env, source, dataset_type):
    from kedro.io import DataCatalog

    catalog = DataCatalog.from_config(config(env, source)["catalog"])
    assert type(catalog.get("raw_images")).__name__ == dataset_type
    if source != "drawings":
        assert config(env, source)["parameters"]["data_episodes"]["class_splits"] is None


def test_gpu_environment_reads_a_users_model_read_only_with_the_grouped_engine():
    generator = config("gpu")["catalog"]["generator"]
    assert generator["read_only"] is True
    parameters = config("gpu")["parameters"]
    assert parameters["inversion"]["textual_inversion"]["num_steps"] == 5000
    assert parameters["inversion"]["null_text"]["num_steps"] == 25
    assert parameters["inversion"]["group_size"] == 5  # an episode's classes share each UNet batch
    assert parameters["inversion"]["precision"] == parameters["synthesis"]["precision"] == "bf16"


@pytest.mark.parametrize(("env", "source"), CONFIGURATIONS)
def test_every_dataset_has_a_kedro_viz_layer(env, source):
    catalog = config(env, source)["catalog"]
    missing = sorted(name for name, entry in catalog.items()
                     if not (entry.get("metadata") or {}).get("kedro-viz", {}).get("layer"))
    assert not missing, f"datasets without a layer in Kedro-Viz (env {env or 'base'}, {source}): {missing}"


# Parameters that are data of a run, not defaults of a setting (no default could be right).
NOT_DEFAULTS = {
    "data_episodes.class_splits": "the embedded drawings' class splits",
    "evaluation.comparisons": "the pairs of methods this experiment compares",
    "execution.stages": "per-stage resources of this project's stages",
}


def _default_differences(defaults, block: dict, prefix: str) -> list[str]:
    """Where ``conf/base``'s ``block`` and ``defaults`` (a settings class, or a default instance of
    one) disagree."""
    import dataclasses

    from tint_distill.params import as_plain
    from tint_distill.pretraining.trainer import PretrainingConfig

    nested_mappings = {"generator_pretraining.training": PretrainingConfig}  # a dict field read as that class
    differences = []
    for field in dataclasses.fields(defaults):
        path = f"{prefix}{field.name}"
        if field.name not in (block or {}) or path in NOT_DEFAULTS:
            continue
        if isinstance(defaults, type):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        else:
            default = getattr(defaults, field.name)
        value = block[field.name]
        if path in nested_mappings:
            differences += _default_differences(nested_mappings[path], value, f"{path}.")
        elif dataclasses.is_dataclass(default) and isinstance(value, dict):
            differences += _default_differences(default, value, f"{path}.")
        elif as_plain(default) != as_plain(value):
            differences.append(f"{path}: conf/base {value!r}, default {default!r}")
    return differences


def test_settings_defaults_are_the_values_in_conf_base():
    """One source of truth per default: a settings class used without conf (a notebook, a test, the
    library) behaves as a plain `kedro run`."""
    from tint_distill.pipelines.parameters import SETTINGS

    params = config()["parameters"]
    differences = [d for name, cls in SETTINGS.items() if name in params
                   for d in _default_differences(cls, params[name], f"{name}.")]
    assert not differences, "settings defaults differ from conf/base:\n" + "\n".join(differences)


def test_nodes_are_thin_and_no_module_imports_a_node_module():
    import ast

    source = PROJECT_ROOT / "src" / "tint_distill"
    long_nodes, importers = [], []
    for path in sorted(source.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".nodes") \
                    and path.parent.name != node.module.split(".")[-2]:
                importers.append(f"{path.relative_to(source)} imports {node.module}")
            if isinstance(node, ast.ImportFrom) and node.module and "pipelines" in node.module and \
                    any(alias.name == "nodes" for alias in node.names) and path.name != "pipeline.py":
                importers.append(f"{path.relative_to(source)} imports {node.module}.nodes")
        if path.name == "nodes.py":
            for function in tree.body:
                if isinstance(function, ast.FunctionDef) and not function.name.startswith("_"):
                    body = function.body[1:] if ast.get_docstring(function) else function.body
                    lines = body[-1].end_lineno - body[0].lineno + 1
                    if lines > 20:
                        long_nodes.append(f"{path.relative_to(source)}::{function.name} ({lines} lines)")
    assert not importers, f"node modules are for pipelines only: {importers}"
    assert not long_nodes, f"a node calls the core in a few lines; move the logic below it: {long_nodes}"
