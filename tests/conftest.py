"""Shared fixtures: real drawings from the embedded data set, written into temporary layouts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

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


@pytest.fixture
def kedro_project(tmp_path: Path) -> Path:
    """A throw-away copy of the project (conf, pyproject, raw data) to run `kedro` in."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project)
    shutil.copy(PROJECT_ROOT / ".telemetry", project)
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # the package itself is installed (editable) in the environment
    shutil.copytree(EMBEDDED, project / "data" / "01_raw" / "openclipart")
    return project


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> Path:
    """A 32 px Stable-Diffusion-architecture model with random weights, as a diffusers folder."""
    from tint_distill.tint import TinySDConfig, build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("generator") / "model", config=TinySDConfig(resolution=32))
