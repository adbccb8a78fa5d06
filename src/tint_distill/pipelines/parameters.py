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
from tint_distill.params import ParameterError, resolve_device, settings_from_params
from tint_distill.pipelines.data_episodes import nodes as data_episodes
from tint_distill.pipelines.distillation import nodes as distillation
from tint_distill.pipelines.evaluation import nodes as evaluation
from tint_distill.pipelines.generator_pretraining import nodes as generator_pretraining
from tint_distill.pipelines.inversion import nodes as inversion
from tint_distill.pipelines.predict import nodes as predict
from tint_distill.pipelines.student_pretraining import nodes as student_pretraining
from tint_distill.pipelines.synthesis import nodes as synthesis
from tint_distill.pipelines.task import nodes as task

BLOCKS: dict[str, Callable[[Any], Any]] = {
    "data_episodes": data_episodes.parse_settings,
    "generator_pretraining": generator_pretraining.parse_settings,
    "inversion": inversion.parse_settings,
    "synthesis": synthesis.parse_settings,
    "synthesis_preview": lambda block: settings_from_params(synthesis.PreviewSettings, block, "synthesis_preview"),
    "methods": distillation.parse_methods,
    "teacher": distillation.parse_teacher,
    "student": distillation.parse_student,
    "distillation": distillation.parse_distillation,
    "student_pretraining": student_pretraining.parse_settings,
    "real_unlabeled": distillation.parse_real_unlabeled,
    "mined_real": distillation.parse_mined_real,
    "evaluation": evaluation.parse_evaluation,
    "speed": evaluation.parse_speed,
    "execution": execution.parse_settings,
    "task": task.parse_settings,
    "predict": predict.parse_settings,
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
            parse(params[name])
    used = set(used_blocks)
    for block in ("generator_pretraining", "inversion", "synthesis"):
        if block in used and block in params:
            device = (params[block] or {}).get("device", "auto")
            try:
                resolve_device(str(device))
            except ParameterError as error:
                raise ParameterError(f"parameter '{block}.device': {error}") from error
    for block, field in (("teacher", "weights_file"), ("student", "pretrained_weights")):
        value = (params.get(block) or {}).get(field)
        if block in used and value and not Path(value).is_file():
            raise ParameterError(
                f"parameter '{block}.{field}' is '{value}', but no such file exists (relative paths start at the "
                "project folder); fix the path, or set it to null."
            )


def blocks_read_by(inputs: Iterable[str]) -> set[str]:
    """The parameter blocks named by a pipeline's ``params:`` inputs."""
    return {name.removeprefix("params:").split(".", 1)[0] for name in inputs if name.startswith("params:")}
