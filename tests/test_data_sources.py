"""The data source (``--params data_source=...``) and the environment (``--env``) combine: each source
brings its reader, class splits, student size, words and models; the environment its compute."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from PIL import Image

from tests.conftest import PROJECT_ROOT, kedro
from tests.test_conventions import ENVS, SOURCES, config
from tint_distill.params import ParameterError
from tint_distill.settings import CONFIG_LOADER_ARGS

PHOTO_WORDS = "A photo of a {token}"
DRAWING_WORDS = "a drawing of a {token}"
# data source: (its student input size, its words, its own class splits?)
EXPECTED = {
    "drawings": (32, DRAWING_WORDS, True),
    "folder": (32, PHOTO_WORDS, False),
    "mini_imagenet": (84, PHOTO_WORDS, False),
    "cub": (84, PHOTO_WORDS, False),
    "cifar_fs": (32, PHOTO_WORDS, False),
}


def test_the_data_sources_are_the_documented_ones():
    assert SOURCES == sorted(EXPECTED)
    assert ENVS == ["gpu", "test"], "an environment is a compute profile; data sources live in conf/data_sources/"


def models_folder(env: str | None, source: str) -> str:
    """Where (env, source) keeps its generator and base student."""
    root = "data/06_models/test" if env == "test" else "data/06_models"
    return root if source == "drawings" else f"{root}/{source}"


@pytest.mark.parametrize("env", [None, "test", "gpu"])
@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_each_source_brings_its_settings_and_models_under_every_environment(env, source):
    size, words, own_splits = EXPECTED[source]
    parameters, catalog = config(env, source)["parameters"], config(env, source)["catalog"]
    assert parameters["data_source"] == source
    assert parameters["distillation"]["image_size"] == size, "the student's size is the data source's"
    assert parameters["inversion"]["textual_inversion"]["prompt_template"] == words
    assert (parameters["data_episodes"]["class_splits"] is not None) == own_splits
    assert catalog["base_student"]["filepath"] == f"{models_folder(env, source)}/base_student.safetensors"
    if env == "gpu":  # the Stable Diffusion folder, whatever the data source; never written
        assert catalog["generator"]["path"] == "data/06_models/stable-diffusion-v1-5"
        assert catalog["generator"]["read_only"] is True
        assert parameters["inversion"]["textual_inversion"]["num_steps"] == 5000
    else:
        assert catalog["generator"]["path"] == f"{models_folder(env, source)}/generator"
        assert not catalog["generator"].get("read_only")


def test_precedence_params_over_environment_over_data_source_over_base():
    parameters = config("test", "mini_imagenet")["parameters"]
    assert parameters["distillation"]["image_size"] == 84, "data source over base"
    assert parameters["inversion"]["textual_inversion"]["num_steps"] == 4, "environment over base"
    assert parameters["data_episodes"]["image_check"] == "episodes", "data source over base"
    # conf/test states its tiny synthetic images' side, so it wins over the source's 84 px (the
    # students still train at 84 px: conf/test leaves distillation.image_size to the data source)
    assert parameters["synthesis"]["output_size"] == 32, "environment over data source"
    assert config(None, "mini_imagenet")["parameters"]["synthesis"]["output_size"] == 84
    assert config("gpu", "mini_imagenet")["parameters"]["synthesis"]["output_size"] == 84
    overridden = config("test", "mini_imagenet", distillation={"image_size": 64}, synthesis={"output_size": 84})
    assert overridden["parameters"]["distillation"]["image_size"] == 64, "--params over the data source"
    assert overridden["parameters"]["synthesis"]["output_size"] == 84, "--params over the environment"
    gpu = config("gpu", "cub", raw_path="/data/CUB_200_2011", sd_model_path="/models/sd15")["catalog"]
    assert (gpu["raw_images"]["path"], gpu["generator"]["path"]) == ("/data/CUB_200_2011", "/models/sd15")


@pytest.mark.parametrize("env", [None, "test"])
def test_the_drawings_resolve_exactly_as_before(env):
    """`kedro run` and `kedro run --env test` on the drawings: the configuration Kedro's own loader
    gives for base + environment (no data-source layer), with the models where they always were."""
    previous = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env=env or "local", **CONFIG_LOADER_ARGS,
                                 custom_resolvers={"data_source_folder": lambda root: root})
    for source in (None, "drawings"):  # no --params, or --params data_source=drawings
        parameters, catalog = config(env, source)["parameters"], config(env, source)["catalog"]
        assert parameters.pop("data_source") == "drawings"
        assert parameters == {k: v for k, v in previous["parameters"].items() if k != "data_source"}
        assert catalog == previous["catalog"]
        folder = "data/06_models/test" if env else "data/06_models"
        assert (catalog["generator"]["path"], catalog["base_student"]["filepath"]) == \
            (f"{folder}/generator", f"{folder}/base_student.safetensors")


def test_a_mistyped_data_source_is_refused_naming_the_valid_ones():
    with pytest.raises(ParameterError, match=r"'data_source' is 'mini_imagnet'.*use one of \['cifar_fs', 'cub', "
                                             r"'drawings', 'folder', 'mini_imagenet'\]"):
        config("gpu", "mini_imagnet")["parameters"]


def test_a_data_source_set_in_a_configuration_file_is_refused(tmp_path: Path):
    """The layers are chosen before the files are read: only --params can choose the data source."""
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "parameters.yml").write_text("data_source: cub\n")
    from tint_distill.config_loader import DataSourceConfigLoader

    with pytest.raises(ParameterError, match=r"--params data_source=cub"):
        DataSourceConfigLoader(str(conf), **CONFIG_LOADER_ARGS)["parameters"]


def test_the_experiment_trains_or_reuses_its_base_student_and_the_default_run_is_unchanged():
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    experiment, default = pipelines["experiment"], pipelines["__default__"]
    assert "base_student" in experiment.all_outputs(), "the experiment makes (or reuses) its base student"
    assert "generator" not in experiment.all_outputs(), "the experiment reads the generator it is given"
    before = pipelines["generator_pretraining"] + pipelines["student_pretraining"] + pipelines["tint"] \
        + pipelines["distillation"] + pipelines["evaluation"]
    assert {n.name for n in default.nodes} == {n.name for n in before.nodes}, "kedro run runs the same nodes"


def write_mini_imagenet(root: Path, embedded_root: Path, per_class: int = 10) -> Path:
    """The miniImageNet layout (Ravi & Larochelle CSVs, flat images/ at 84 px) of real drawings:
    3 base, 2 val and 3 novel classes."""
    splits = {"train": ["mammal", "bug", "boat"], "val": ["tree", "book"], "test": ["fish", "clock", "house"]}
    (root / "images").mkdir(parents=True)
    for split, names in splits.items():
        lines = ["filename,label"]
        for k, name in enumerate(names):
            wnid = f"n0{split[:2]}{k:05d}"
            for j, file in enumerate(sorted((embedded_root / name).glob("*.png"))[:per_class]):
                filename = f"{wnid}{j + 1:08d}.jpg"
                Image.open(file).convert("RGB").resize((84, 84)).save(root / "images" / filename, quality=90)
                lines.append(f"{filename},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def digests(folder: Path) -> dict[str, str]:
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_a_mistyped_data_source_stops_before_any_work(kedro_project: Path, embedded_root: Path, tmp_path: Path):
    """`kedro run --env test --pipelines experiment --params data_source=mini_imagnet,...` names the
    valid sources and writes nothing. (The benchmark's experiment itself runs in
    tests/test_paper_table.py, from the README's command.)"""
    project = kedro_project
    raw = write_mini_imagenet(tmp_path / "mini-imagenet", embedded_root, per_class=2)
    typo = kedro(project, "run", "--env", "test", "--pipelines", "experiment", "--params",
                 f"data_source=mini_imagnet,raw_path={raw}", check=False)
    output = typo.stdout + typo.stderr
    assert typo.returncode != 0 and "use one of ['cifar_fs', 'cub', 'drawings', 'folder', 'mini_imagenet']" in output
    assert "Running node" not in output and not (project / "data" / "02_intermediate").exists()
