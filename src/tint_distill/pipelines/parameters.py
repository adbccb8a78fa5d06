"""Every parameter block of the project, checked when a run starts, before any stage works.

Each block is parsed by the same function its nodes use, so a check here and the node that
reads the block cannot disagree. A block no node reads (a typo such as ``synthesys``) is an
error rather than a silent no-op.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tint_distill.data.episodes import DataEpisodesSettings
from tint_distill.data.task import TaskSettings
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentPretrainingSettings, StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.evaluation.prediction import PredictSettings
from tint_distill.evaluation.scoring import EvaluationSettings
from tint_distill.evaluation.speed import SpeedSettings
from tint_distill.execution import ExecutionSettings
from tint_distill.execution import parse_settings as execution_settings
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings, check_kept_methods, parse_methods
from tint_distill.params import ParameterError, Settings, as_plain, resolve_device, settings_from_params
from tint_distill.pretraining.generator import PretrainingSettings, pretraining_settings
from tint_distill.stages.inversion import InversionSettings
from tint_distill.stages.synthesis import PreviewSettings, SynthesisSettings

# Every parameter block with a settings class: what Kedro builds for a node that reads it.
SETTINGS: dict[str, type[Settings]] = {
    "data_episodes": DataEpisodesSettings,
    "generator_pretraining": PretrainingSettings,
    "inversion": InversionSettings,
    "synthesis": SynthesisSettings,
    "synthesis_preview": PreviewSettings,
    "teacher": TeacherSettings,
    "student": StudentSettings,
    "distillation": DistillationConfig,
    "student_pretraining": StudentPretrainingSettings,
    "real_unlabeled": RealUnlabeledSettings,
    "mined_real": MinedRealSettings,
    "evaluation": EvaluationSettings,
    "speed": SpeedSettings,
    "execution": ExecutionSettings,
    "task": TaskSettings,
    "predict": PredictSettings,
}

# What a block's check adds to building its settings (blocks read by more than one settings class).
EXTRA_CHECKS: dict[str, Callable[[Any], Any]] = {
    "generator_pretraining": pretraining_settings,  # the training recipe with the architecture
    "student": lambda settings: check_kept_methods(settings.keep_weights),
    "execution": lambda settings: execution_settings(as_plain(settings)),  # every stage's resources
}


def parse_block(name: str, block: Any) -> Any:
    """The block ``name`` as its settings (``methods``: the list of methods), checked; errors name
    the parameter."""
    if name == "methods":
        return parse_methods(block)
    settings = settings_from_params(SETTINGS[name], block, name)
    if name in EXTRA_CHECKS:
        EXTRA_CHECKS[name](settings)
    return settings


BLOCKS = {*SETTINGS, "methods"}

# Parameters that only configuration files read (through ${runtime_params:...}), not nodes.
RUNTIME_ONLY = {
    "sd_model_path": "the Stable Diffusion folder of the gpu environment (conf/gpu/catalog.yml)",
    "raw_path": "the data source's folder (conf/data_sources/<data_source>/catalog.yml)",
    "task_path": "the task pipeline's folder of labelled images (conf/base/catalog_task.yml)",
    "predict_path": "the predict pipeline's folder of images to classify (conf/base/catalog_task.yml)",
}


# Parameters the configuration loader reads to choose what it layers (tint_distill.config_loader),
# kept in the parameters so that a node can read them too (params:data_source).
CONFIGURATION_CHOICES = {
    "data_source": "the data source whose folder conf/data_sources/<data_source>/ is layered over base "
                   "(drawings | folder | mini_imagenet | cub | cifar_fs); checked when the configuration loads",
}


def check_parameters(params: Mapping[str, Any], used_blocks: Iterable[str] = ()) -> None:
    """Raise :class:`ParameterError` naming the first bad parameter.

    Every block is parsed; for the blocks the pipeline about to run reads (``used_blocks``),
    devices and weight files are also checked against this machine.
    """
    known = set(BLOCKS) | set(RUNTIME_ONLY) | set(CONFIGURATION_CHOICES)
    for name in sorted(set(params) - known):
        close = difflib.get_close_matches(name, known, n=1)
        raise ParameterError(
            f"parameter block '{name}' is not read by any pipeline of this project, so setting it would change "
            f"nothing{f' (did you mean {close[0]!r}?)' if close else ''}; known blocks: {sorted(known)}."
        )
    for name in sorted(BLOCKS & set(params)):
        parse_block(name, params[name])
    check_on_this_machine(params, used_blocks)


def check_on_this_machine(params: Mapping[str, Any], used_blocks: Iterable[str]) -> None:
    """The devices and weight files of the blocks the pipeline about to run reads (``used_blocks``)
    exist on this machine (the blocks themselves are checked by :func:`check_parameters`)."""
    used = set(used_blocks)
    for block in ("generator_pretraining", "inversion", "synthesis"):
        if block in used and block in params:
            device = (as_plain(params[block]) or {}).get("device", "auto")
            try:
                resolve_device(str(device))
            except ParameterError as error:
                raise ParameterError(f"parameter '{block}.device': {error}") from error
    for block, field in (("teacher", "weights_file"), ("student", "pretrained_weights")):
        value = (as_plain(params.get(block)) or {}).get(field)
        if block in used and value and not Path(value).is_file():
            raise ParameterError(
                f"parameter '{block}.{field}' is '{value}', but no such file exists (relative paths start at the "
                "project folder); fix the path, or set it to null."
            )


def blocks_read_by(inputs: Iterable[str]) -> set[str]:
    """The parameter blocks named by a pipeline's ``params:`` inputs."""
    return {name.removeprefix("params:").split(".", 1)[0] for name in inputs if name.startswith("params:")}
