"""The README's "Reproduce the paper's table": every documented command resolves to its benchmark's
settings on the gpu profile, and the miniImageNet one runs end to end on the CPU at tiny settings."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file

from tests.conftest import PROJECT_ROOT, kedro
from tests.test_conventions import config
from tests.test_data_sources import digests, write_mini_imagenet
from tint_distill.distill import student  # noqa: F401 (registers resnet12 in timm)

SPECIALISATIONS = Path("data/06_models/class_specialisations")
SIZES = {"mini_imagenet": 84, "cub": 84, "cifar_fs": 32}  # the students' input side in the few-shot literature


def readme_table() -> list[dict]:
    """The rows of the README's table: benchmark, setting, --env, the --params items (with $MODELS
    expanded, in order) and the episodes a +/-1 pt interval needs."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Reproduce the paper's table", 1)[1].split("\n## ", 1)[0]
    models = re.search(r"^MODELS=(\S+)$", section, re.M).group(1)
    rows = []
    for line in section.splitlines():
        match = re.match(r"\| (.+?) \| (\d)-way (\d)-shot \| `kedro run --env (\w+) --pipelines (\w+) --params \"(.+?)\"` "
                         r"\| ~(\d+) \|", line)
        if match:
            benchmark, n_way, n_shot, env, pipeline, params, needed = match.groups()
            items = dict(item.split("=", 1) for item in params.replace("$MODELS", models).split(","))
            rows.append({"benchmark": benchmark, "n_way": int(n_way), "n_shot": int(n_shot), "env": env,
                         "pipeline": pipeline, "params": items, "episodes_needed": int(needed)})
    return rows


def runtime_params(items: dict[str, str]) -> dict:
    """``--params`` as Kedro's CLI turns it into runtime parameters (a nested dict, typed values)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in items.items()]))


def test_the_table_has_a_command_per_benchmark_and_setting():
    rows = readme_table()
    assert {(r["params"]["data_source"], r["n_shot"]) for r in rows} == {(s, k) for s in SIZES for k in (1, 5)}
    assert all(r["env"] == "gpu" and r["pipeline"] == "experiment" for r in rows)


@pytest.mark.parametrize("row", readme_table(), ids=lambda r: f"{r['params']['data_source']}-{r['n_shot']}shot")
def test_each_documented_command_resolves_to_its_benchmark_on_the_gpu_profile(row):
    source = row["params"]["data_source"]
    resolved = config(row["env"], **runtime_params(row["params"]))
    parameters, catalog = resolved["parameters"], resolved["catalog"]
    sampling = parameters["data_episodes"]["sampling"]
    assert (sampling["n_way"], sampling["n_shot"]) == (row["n_way"], row["n_shot"])
    assert sampling["n_episodes"] >= row["episodes_needed"], "the command runs the episodes its +/-1 pt needs"
    assert parameters["distillation"]["image_size"] == SIZES[source]
    assert parameters["synthesis"]["output_size"] == SIZES[source], "synthetic images at the students' size"
    assert parameters["data_episodes"]["class_splits"] is None, "the benchmark's own splits"
    assert parameters["inversion"]["textual_inversion"]["prompt_template"] == "A photo of a {token}"
    assert parameters["student"]["name"] == "resnet12" and timm.is_model("resnet12")
    assert parameters["teacher"]["backbone"] == "vit_base_patch14_dinov2"
    assert parameters["inversion"]["textual_inversion"]["num_steps"] == 5000, "the reference settings"
    assert parameters["synthesis"]["images_per_class"] == 1000
    assert {parameters[block]["device"] for block in ("inversion", "synthesis", "teacher", "distillation")} == {"cuda"}
    assert catalog["generator"]["path"] == row["params"]["sd_model_path"], "the SD folder is the generator"
    assert catalog["raw_images"]["path"] == row["params"]["raw_path"]
    assert catalog["base_student"]["filepath"] == f"data/06_models/{source}/base_student.safetensors"


@pytest.mark.slow
def test_the_documented_mini_imagenet_command_runs_on_a_cpu(kedro_project: Path, embedded_root: Path, tmp_path: Path):
    """The README's miniImageNet 1-shot command with a random-weight SD 1.x folder laid out as
    downloaded, the CPU for every stage and tiny step counts: it trains the benchmark's base student
    and its ResNet-12 students at 84 px, labels with a DINOv2 ViT, writes the table's row and leaves
    the drawings' generator and base student as they were."""
    from tint_distill.tint import build_tiny_stable_diffusion

    project = kedro_project
    models = project / "data" / "06_models"
    shutil.copytree(PROJECT_ROOT / "data" / "06_models" / "generator", models / "generator")
    shutil.copy(PROJECT_ROOT / "data" / "06_models" / "base_student.safetensors", models)
    shipped = {**digests(models / "generator"), **digests(models / "base_student.safetensors")}
    raw = write_mini_imagenet(tmp_path / "mini-imagenet", embedded_root, per_class=6)
    sd = build_tiny_stable_diffusion(tmp_path / "stable-diffusion-v1-5", resolution=64, seed=0)
    index = json.loads((sd / "model_index.json").read_text())  # as downloaded: parts this project does not use
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"])
    (sd / "model_index.json").write_text(json.dumps(index))
    (sd / "feature_extractor").mkdir()
    (sd / "feature_extractor" / "preprocessor_config.json").write_text("{}")
    teacher_file = tmp_path / "dinov2_vits14.safetensors"  # a ViT-S/14 built at 28 px: 2 x 2 patches
    save_file(timm.create_model("vit_small_patch14_dinov2", img_size=28, num_classes=0).state_dict(), teacher_file)

    row = next(r for r in readme_table() if r["params"]["data_source"] == "mini_imagenet" and r["n_shot"] == 1)
    params = {**row["params"], "sd_model_path": str(sd), "raw_path": str(raw),
              "teacher.backbone": "vit_small_patch14_dinov2", "teacher.weights_file": str(teacher_file),
              "teacher.image_size": "28",
              **{f"{block}.device": "cpu" for block in ("inversion", "synthesis", "teacher", "distillation")},
              "teacher.precision": "fp32", "distillation.precision": "fp32",
              "data_episodes.sampling.n_episodes": "1", "data_episodes.sampling.n_way": "3",
              "data_episodes.sampling.n_query": "2", "inversion.textual_inversion.num_steps": "2",
              "inversion.null_text.num_steps": "2", "inversion.null_text.inner_steps": "1",
              "synthesis.images_per_class": "2", "distillation.epochs": "1", "student_pretraining.epochs": "1",
              "real_unlabeled.images_per_class": "2", "mined_real.images_per_class": "2",
              "speed.batch_size": "2", "speed.n_batches": "1"}
    run = kedro(project, "run", "--env", row["env"], "--pipelines", row["pipeline"],
                "--params", ",".join(f"{k}={v}" for k, v in params.items()))
    log = run.stdout + run.stderr
    assert re.search(r"Base student: training \S*data/06_models/mini_imagenet/base_student\.safetensors", log)
    sizes = re.findall(r"student: (\S+), \d+ classes, (\d+) px", log)
    assert len(sizes) > 1 and set(sizes) == {("resnet12", "84")}, sizes
    sidecars = [json.loads(p.read_text()) for p in (project / SPECIALISATIONS).rglob("*.json")
                if not p.name.startswith("_")]
    assert len(sidecars) == 3 and all(s["diagnostics"]["precision"] == "bf16" and s["diagnostics"]["group_size"] == 3
                                      for s in sidecars), "the episode's classes in one group, in bf16"
    assert all(s["textual_inversion"]["prompt_template"] == "A photo of a {token}" for s in sidecars), \
        "conf/gpu is compute only: the words are the data source's"
    table = (project / "data" / "08_reporting" / "results_table.md").read_text()
    assert re.search(r"^\| mini_imagenet \| 3-way 1-shot \| 1 \| ", table, re.M), table
    assert {**digests(models / "generator"), **digests(models / "base_student.safetensors")} == shipped
