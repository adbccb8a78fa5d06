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

from tint_distill import execution
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings, check_kept_methods, parse_methods
from tint_distill.params import ParameterError, as_plain, resolve_device, settings_from_params
from tint_distill.pipelines.data_episodes import nodes as data_episodes
from tint_distill.pipelines.evaluation import nodes as evaluation
from tint_distill.pipelines.generator_pretraining import nodes as generator_pretraining
from tint_distill.pipelines.predict import nodes as predict
from tint_distill.pipelines.student_pretraining import nodes as student_pretraining
from tint_distill.pipelines.task import nodes as task
from tint_distill.stages.inversion import InversionSettings
from tint_distill.stages.synthesis import PreviewSettings, SynthesisSettings


def _settings(cls: type, check=None) -> Callable[[Any, str], Any]:
    def parse(block: Any, name: str) -> Any:
        settings = settings_from_params(cls, block, name)
        if check is not None:
            check(settings)
        return settings

    return parse


def _student(settings: StudentSettings) -> None:
    check_kept_methods(settings.keep_weights)

# Every block: how it is read (its settings class, checked as Kedro's typed parameters are), by name.
BLOCKS: dict[str, Callable[[Any, str], Any]] = {
    "data_episodes": lambda block, name: data_episodes.parse_settings(block),
    "generator_pretraining": lambda block, name: generator_pretraining.parse_settings(block),
    "inversion": _settings(InversionSettings),
    "synthesis": _settings(SynthesisSettings),
    "synthesis_preview": _settings(PreviewSettings),
    "methods": lambda block, name: parse_methods(block),
    "teacher": _settings(TeacherSettings),
    "student": _settings(StudentSettings, _student),
    "distillation": _settings(DistillationConfig),
    "student_pretraining": lambda block, name: student_pretraining.parse_settings(block),
    "real_unlabeled": _settings(RealUnlabeledSettings),
    "mined_real": _settings(MinedRealSettings),
    "evaluation": lambda block, name: evaluation.parse_evaluation(block),
    "speed": lambda block, name: evaluation.parse_speed(block),
    "execution": lambda block, name: execution.parse_settings(as_plain(block)),
    "task": lambda block, name: task.parse_settings(block),
    "predict": lambda block, name: predict.parse_settings(block),
}

# Parameters that only configuration files read (through ${runtime_params:...}), not nodes.
RUNTIME_ONLY = {
    "sd_model_path": "the Stable Diffusion folder of the gpu environment (conf/gpu/catalog.yml)",
    "raw_path": "the data folder of the benchmark environments (conf/{mini_imagenet,cub,cifar_fs}/catalog.yml)",
    "task_path": "the task pipeline's folder of labelled images (conf/base/catalog_task.yml)",
    "predict_path": "the predict pipeline's folder of images to classify (conf/base/catalog_task.yml)",
}


def check_parameters(params: Mapping[str, Any], used_blocks: Iterable[str] = ()) -> None:
    """Raise :class:`ParameterError` naming the first bad parameter.

    Every block is parsed; for the blocks the pipeline about to run reads (``used_blocks``),
    devices and weight files are also checked against this machine.
    """
    known = set(BLOCKS) | set(RUNTIME_ONLY)
    for name in sorted(set(params) - known):
        close = difflib.get_close_matches(name, known, n=1)
        raise ParameterError(
            f"parameter block '{name}' is not read by any pipeline of this project, so setting it would change "
            f"nothing{f' (did you mean {close[0]!r}?)' if close else ''}; known blocks: {sorted(known)}."
        )
    for name, parse in BLOCKS.items():
        if name in params:
            parse(params[name], name)
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
