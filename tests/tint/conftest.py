"""Fixtures of the TINT core tests: a tiny random-weight SD model and small real images.

The images are the drawings committed under data/01_raw/openclipart (two classes); a missing
folder fails the tests that use them, naming it (nothing stands in for the real drawings).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tint_distill.tint import (  # noqa: E402
    NullTextConfig,
    TextualInversionConfig,
    build_tiny_stable_diffusion,
    load_stable_diffusion,
    specialise_class,
)
from tint_distill.tint.imaging import to_model_tensor  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DRAWINGS = PROJECT_ROOT / "data" / "01_raw" / "openclipart"
RESOLUTION = 64
NUM_STEPS = 8  # DDIM steps in these tests (the reference uses 25)


def class_images(class_index: int, count: int) -> list[Image.Image]:
    """``count`` distinct committed drawings of one class (fish or clock), at most 256 px."""
    name = ("fish", "clock")[class_index]
    folder = DRAWINGS / name
    assert folder.is_dir(), f"{folder} missing: the embedded drawings are part of the repo (git checkout data/01_raw)"
    files = sorted(folder.glob("*.png"))[::3][:count]  # spread: distinct drawings
    assert len(files) == count, f"{folder}: {count} drawings needed (every third file), found {len(files)}"
    images = []
    for file in files:
        with Image.open(file) as image:
            image.draft("RGB", (256, 256))
            image = image.copy()
        image.thumbnail((256, 256))
        images.append(image)
    return images


@contextlib.contextmanager
def one_thread():
    """Run with one torch thread: as fast for these tiny models, and immune to the 10-100x
    slowdown of two OpenMP threads on a 2-core machine when another process is busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with one_thread():
        return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd") / "model", resolution=RESOLUTION,
                                           seed=0)


@pytest.fixture(scope="session")
def shared_components(model_dir: Path):
    """Loaded once; tests that add tokens use ``components`` instead."""
    return load_stable_diffusion(model_dir)


@pytest.fixture
def components(model_dir: Path):
    """A fresh copy for tests that change the tokenizer or the embeddings."""
    return load_stable_diffusion(model_dir)


@pytest.fixture(scope="session")
def supports() -> torch.Tensor:
    """Three support images of one class, (3, 3, 64, 64) in [-1, 1]."""
    return to_model_tensor(class_images(0, 3), RESOLUTION)


@pytest.fixture(scope="session")
def group_images() -> list[torch.Tensor]:
    """Supports of three classes for the grouped engine: fish (3), clock (2), fish again (3)."""
    fish, clock = (to_model_tensor(class_images(i, 4), RESOLUTION) for i in (0, 1))
    return [fish[:3], clock[:2], fish[1:]]


@pytest.fixture(scope="session")
def nti_config() -> NullTextConfig:
    return NullTextConfig(num_steps=NUM_STEPS)  # reference CFG 7.5, lr 1e-2, 10 inner steps, 1e-5


@pytest.fixture(scope="session")
def specialised(model_dir: Path, supports: torch.Tensor, nti_config: NullTextConfig):
    """(components, specialisation) of one class, made once: 15 TI steps then NTI."""
    components = load_stable_diffusion(model_dir)
    with one_thread():
        spec = specialise_class(
            components, supports, token="<fish>", init_word="fish",
            ti_config=TextualInversionConfig(num_steps=15, learning_rate=5e-3, prompt_template="A photo of an {token}"),
            nti_config=nti_config,
            support_ids=["a.png", "b.png", "c.png"],
        )
    return components, spec
