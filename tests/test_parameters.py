"""Settings are checked when a run starts, with errors that name the parameter."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.test_conventions import CONFIGURATIONS, PROJECT_ROOT, config
from tint_distill.params import ParameterError
from tint_distill.pipelines.parameters import BLOCKS, CONFIGURATION_CHOICES, RUNTIME_ONLY, check_parameters
from tint_distill.tint import ModelFolderError, check_model_folder


@pytest.mark.parametrize(("env", "source"), CONFIGURATIONS)
def test_every_environment_and_data_source_passes_the_start_of_run_check(env, source):
    params = config(env, source)["parameters"]
    assert set(params) <= set(BLOCKS) | set(CONFIGURATION_CHOICES), "every declared block has a check"
    check_parameters(params)


def test_every_runtime_parameter_of_the_configuration_is_allowed():
    used = set()
    for file in (PROJECT_ROOT / "conf").rglob("*.yml"):
        used |= set(re.findall(r"\$\{runtime_params:(\w+)", file.read_text()))
    assert used and used <= set(RUNTIME_ONLY), sorted(used - set(RUNTIME_ONLY))
    check_parameters({**config()["parameters"], **{name: "/somewhere" for name in used}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"synthesis": {"alpha": 2}}, r"parameter 'synthesis\.alpha' must be in \[0, 1\]"),
        ({"synthesis": {"alpha": "abc"}}, r"parameter 'synthesis\.alpha' must be a number, got 'abc'"),
        ({"synthesis": {"alpah": 0.3}}, r"unknown keys \['alpah'\] \('alpah': did you mean 'alpha'\?\)"),
        ({"synthesys": {"alpha": 0.3}}, r"block 'synthesys' is not read by any pipeline .*did you mean 'synthesis'"),
        ({"executor": {"engine": "ray"}}, r"block 'executor' is not read by any pipeline.*did you mean 'execution'"),
        ({"execution": {"engine": "dask"}}, r"'execution.engine' must be one of \['local', 'ray'\], got 'dask'"),
        ({"execution": {"gpus_per_unit": 1.5}}, r"'execution.gpus_per_unit' above 1 must be a whole number"),
        ({"execution": {"max_workers": 0}}, r"'execution.max_workers' must be >= 1 or null"),
        ({"execution": {"stages": {"synthesys": {"gpus_per_unit": 1}}}},
         r"'execution.stages.synthesys' must be one of \['inversion', 'synthesis', 'distillation'\]"),
        ({"execution": {"stages": {"synthesis": {"gpus_per_unit": -1}}}},
         r"'execution.stages.synthesis.gpus_per_unit' must be >= 0"),
        ({"execution": {"stages": {"synthesis": {"engine": "ray"}}}},
         r"'execution.stages.synthesis' may set only \['cpus_per_unit', 'gpus_per_unit', 'max_workers'\]"),
        ({"data_episodes": {"sampling": {"n_way": 0}}}, r"'data_episodes\.sampling\.n_way' must be a positive integer"),
        ({"data_episodes": {"image_check": "some"}}, r"parameter 'data_episodes\.image_check' must be one of"),
        ({"evaluation": {"comparisons": [["tint", "magic"]]}}, r"parameter 'evaluation\.comparisons' must be \[a, b\] pairs"),
        ({"methods": ["tint", "dreambooth"]}, r"parameter 'methods' must be a non-empty subset"),
        ({"speed": {"n_batches": 0}}, r"parameter 'speed\.n_batches' must be >= 1"),
        ({"inversion": {"null_text": {"inner_step": 3}}}, r"'inversion\.null_text' has unknown keys \['inner_step'\]"),
        ({"inversion": {"precision": "fp8"}}, r"parameter 'inversion\.precision' must be one of \['fp32', 'bf16', 'fp16'\]"),
        ({"inversion": {"group_size": 0}}, r"parameter 'inversion\.group_size' must be >= 1"),
        ({"synthesis": {"dtype": "float16"}}, r"unknown keys \['dtype'\] \('dtype' is now precision \(fp32 \| bf16 \| fp16\)\)"),
    ],
)
def test_bad_settings_are_named(override, message):
    params = config()["parameters"]
    for block, value in override.items():
        params[block] = {**params[block], **value} if isinstance(value, dict) and block in params else value
    with pytest.raises(ParameterError, match=message):
        check_parameters(params)


def test_machine_checks_apply_to_the_blocks_the_run_reads(tmp_path: Path):
    params = config()["parameters"]
    params["teacher"] = {**params["teacher"], "weights_file": str(tmp_path / "missing.pth")}
    check_parameters(params, used_blocks={"synthesis"})  # the teacher is not part of this run
    with pytest.raises(ParameterError, match=r"parameter 'teacher\.weights_file' is '.*missing\.pth', but no such file"):
        check_parameters(params, used_blocks={"teacher"})
    if not __import__("torch").cuda.is_available():
        params["inversion"] = {**params["inversion"], "device": "cuda"}
        with pytest.raises(ParameterError, match=r"parameter 'inversion\.device'.*no CUDA GPU"):
            check_parameters(params, used_blocks={"inversion"})


def test_a_hub_id_made_absolute_by_kedro_still_gets_the_hub_advice(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Kedro resolves catalog paths against the project folder
    with pytest.raises(ModelFolderError, match=r"^'runwayml/stable-diffusion-v1-5' is not a local folder; it looks like a Hugging Face Hub id"):
        check_model_folder(os.path.join(tmp_path, "runwayml", "stable-diffusion-v1-5"))
    with pytest.raises(ModelFolderError, match="does not exist"):
        check_model_folder(tmp_path / "data" / "06_models" / "sd15")


def test_a_stage_reserves_what_its_entry_says_and_the_rest_from_the_block():
    from tint_distill.execution import parse_settings

    block = config()["parameters"]["execution"] | {"engine": "ray", "gpus_per_unit": 1, "cpus_per_unit": 4}
    assert parse_settings(block, "inversion").gpus_per_unit == 1
    students = parse_settings(block, "distillation")
    assert (students.gpus_per_unit, students.cpus_per_unit, students.engine) == (0, 4, "ray"), "CPU work: no GPU"
