"""The configuration loader: a data source (``--params data_source=...``) and an environment
(``--env``) chosen independently, so that a benchmark and a compute profile combine.

Layers, each overriding the one before: ``conf/base`` < ``conf/data_sources/<data_source>/`` <
the environment (``conf/<env>``, default ``conf/local``) < ``--params``. So ``conf/gpu`` (compute:
devices, precision, step counts, the Stable Diffusion folder) and ``conf/test`` (tiny step counts,
their own tiny models) apply to any data source, and your ``conf/local`` overrides both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from tint_distill.params import ParameterError

DATA_SOURCES_FOLDER = "data_sources"  # conf/data_sources/<name>/: one folder per data source
DEFAULT_DATA_SOURCE = "drawings"      # conf/base is the drawings' configuration; its folder adds nothing


class DataSourceConfigLoader(OmegaConfigLoader):
    """:class:`OmegaConfigLoader` with the data source's folder merged over ``base`` (before the
    environment). A data source that has no folder is refused at once, naming the ones there are.

    Registers the resolver ``${data_source_folder:<root>}``: ``<root>`` for the drawings,
    ``<root>/<data_source>`` for any other source (``conf/test`` keeps each source's tiny models
    apart with it, and the drawings' where they always were)."""

    def __init__(self, conf_source: str, env: str | None = None, runtime_params: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self.data_source = str((runtime_params or {}).get("data_source", DEFAULT_DATA_SOURCE))
        known = data_sources(conf_source)
        if self.data_source not in known:  # before anything is read, so before any work
            raise ParameterError(
                f"parameter 'data_source' is {self.data_source!r}, which is not a data source of this project; "
                f"use one of {known} (a folder in {Path(conf_source) / DATA_SOURCES_FOLDER})."
            )
        super().__init__(conf_source, env=env, runtime_params=runtime_params, **kwargs)

    def __getitem__(self, key: str) -> dict[str, Any]:
        OmegaConf.register_resolver("data_source_folder", self._data_source_folder, replace=True)
        config = super().__getitem__(key)
        if key == "parameters":
            self._check_chosen_on_the_command_line(config)
        return config

    def _read_raw_config(self, key: str) -> tuple:
        base_configs, env_configs, base_path, env_path, processed_files = super()._read_raw_config(key)
        source_path = str(Path(self._get_conf_env_path(DATA_SOURCES_FOLDER)) / self.data_source)
        source_configs = self._read_dir_configs(
            source_path, [*self.config_patterns[key]], key, processed_files, key == "credentials"
        )
        # Merged in this order (base's files, then the data source's): the data source overrides base.
        return {**base_configs, **source_configs}, env_configs, base_path, env_path, processed_files

    def _data_source_folder(self, root: str) -> str:
        return root if self.data_source == DEFAULT_DATA_SOURCE else f"{root.rstrip('/')}/{self.data_source}"

    def _check_chosen_on_the_command_line(self, parameters: dict[str, Any]) -> None:
        configured = parameters.get("data_source", DEFAULT_DATA_SOURCE)
        if configured != self.data_source:
            raise ParameterError(
                f"parameter 'data_source' is {configured!r} in a configuration file, but the configuration was "
                f"layered for {self.data_source!r}: choose the data source on the command line "
                f"(--params data_source={configured}), not in conf/."
            )


def data_sources(conf_source: str | Path) -> list[str]:
    """The data sources of the project: the folders of ``conf/data_sources/``."""
    folder = Path(conf_source) / DATA_SOURCES_FOLDER
    return sorted(p.name for p in folder.iterdir() if p.is_dir())
