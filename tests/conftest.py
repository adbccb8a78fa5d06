"""Shared fixtures: real drawings from the embedded data set, written into temporary layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: two test processes (pytest-xdist) on two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread each, and in every `kedro run` they start

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = PROJECT_ROOT / "data" / "01_raw" / "openclipart"


@pytest.fixture(scope="session")
def embedded_root() -> Path:
    assert EMBEDDED.is_dir(), f"{EMBEDDED} missing: the embedded drawings are part of the repo"
    return EMBEDDED


@pytest.fixture
def small_folder(tmp_path: Path, embedded_root: Path) -> Path:
    """``root/<class>/<image>.png`` with 4 real classes of 8 drawings each."""
    root = tmp_path / "images"
    for name in ("fish", "fruit", "clock", "house"):
        (root / name).mkdir(parents=True)
        for file in sorted((embedded_root / name).glob("*.png"))[:8]:
            shutil.copy(file, root / name / file.name)
    return root


KEDRO = [sys.executable, "-m", "kedro"]


def kedro(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``kedro <args>`` in ``project``, output captured; fails the test with its tail if ``check``."""
    env = {**os.environ, "COLUMNS": "400"}  # rich would wrap long lines at 80 columns
    result = subprocess.run([*KEDRO, *args], cwd=project, capture_output=True, text=True, timeout=600, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def copy_project(project: Path) -> Path:
    """A throw-away copy of the project (conf, pyproject, raw data) at ``project``, to run `kedro` in."""
    project.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project)
    shutil.copy(PROJECT_ROOT / ".telemetry", project)
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # the package itself is installed (editable) in the environment
    shutil.copytree(EMBEDDED, project / "data" / "01_raw" / "openclipart")
    return project


@pytest.fixture
def kedro_project(tmp_path: Path) -> Path:
    """A throw-away copy of the project (conf, pyproject, raw data) to run `kedro` in."""
    return copy_project(tmp_path / "project")


PRETRAINING = "generator_pretraining,student_pretraining,data_episodes"


@dataclass(frozen=True)
class Pretraining:
    project: Path
    log: str  # the run's stdout and stderr


@pytest.fixture(scope="session")
def pretraining(tmp_path_factory) -> Pretraining:
    """A project copy after `kedro run --env test --pipelines generator_pretraining,student_pretraining,
    data_episodes`: the test environment's own tiny generator and base student, trained from scratch,
    and the episodes. Made once per session; read only: tests copy it with :func:`copy_pretrained`."""
    project = copy_project(tmp_path_factory.mktemp("pretrained") / "project")
    assert not (project / "data" / "06_models" / "test").exists(), "the project copy must start without models"
    result = kedro(project, "run", "--env", "test", "--pipelines", PRETRAINING)
    return Pretraining(project, result.stdout + result.stderr)


@pytest.fixture(scope="session")
def pretrained_project(pretraining: Pretraining) -> Path:
    return pretraining.project


def copy_pretrained(pretrained: Path, project: Path) -> Path:
    """A copy of the pretrained project with an empty tracking store (its MLflow experiment, made
    anew, keeps its artefacts in this copy, not in the shared one)."""
    shutil.copytree(pretrained, project, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", ".viz"))
    return project


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> Path:
    """A 32 px Stable-Diffusion-architecture model with random weights, as a diffusers folder."""
    from tint_distill.tint import TinySDConfig, build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("generator") / "model", config=TinySDConfig(resolution=32))


def episode_table(folder: Path, episodes=(0,), supports: int = 2, queries: int = 0,
                  classes=("fish", "clock")) -> "pd.DataFrame":
    """An episodes table over a folder of class sub-folders: per episode and class (labels in
    ``classes`` order), its first ``supports`` drawings as supports and the next ``queries`` as queries."""
    import pandas as pd

    rows = []
    for episode in episodes:
        for label, name in enumerate(classes):
            ids = sorted(p.relative_to(folder).as_posix() for p in (folder / name).glob("*.png"))
            rows += [(episode, label, name, "support", i, image_id) for i, image_id in enumerate(ids[:supports])]
            rows += [(episode, label, name, "query", i, image_id)
                     for i, image_id in enumerate(ids[supports:supports + queries])]
    return pd.DataFrame(rows, columns=["episode", "label", "class_name", "role", "position", "image_id"])
