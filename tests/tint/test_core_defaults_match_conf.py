"""The settings classes of the Kedro-free core default to what conf/base sets, so code that
builds one without the project's configuration gets the same run as `kedro run`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.pretraining.quality import QualitySettings
from tint_distill.pretraining.trainer import PretrainingConfig
from tint_distill.tint import NullTextConfig, TextualInversionConfig, TinySDConfig

CONF_BASE = Path(__file__).resolve().parents[2] / "conf" / "base"


def _parameters() -> dict:
    parameters: dict = {}
    for file in sorted(CONF_BASE.glob("parameters*.yml")):
        parameters.update(yaml.safe_load(file.read_text()) or {})
    return parameters


def _block(path: str) -> dict:
    block = _parameters()
    for key in path.split("."):
        block = block[key]
    return block


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("cls, path", [
    (TextualInversionConfig, "inversion.textual_inversion"),
    (NullTextConfig, "inversion.null_text"),
    (PretrainingConfig, "generator_pretraining.training"),
    (QualitySettings, "generator_pretraining.quality"),
    (DistillationConfig, "distillation"),
    (TeacherSettings, "teacher"),
    (StudentSettings, "student"),
])
def test_defaults_are_conf_base(cls, path):
    default = cls()
    assert {k: _plain(v) for k, v in _block(path).items()} == {k: getattr(default, k) for k in _block(path)}


def test_the_pretraining_default_model_is_conf_base_architecture():
    # TinySDConfig's own defaults stay the small test model's (tests outside the core build it
    # with them); the architecture the project trains is the default of PretrainingConfig.model.
    assert PretrainingConfig().model == TinySDConfig(**_block("generator_pretraining.architecture"))
