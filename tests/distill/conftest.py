"""Fixtures of the distillation tests: real drawings from data/01_raw/openclipart."""

from __future__ import annotations

import pytest
import torch

from tint_distill.data.sources import image_folder


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run on one thread: on a shared 2-core machine, two-thread torch is often several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def drawings(embedded_root):
    """The embedded openclipart drawings as a lazy collection (28 classes, 21-40 images each)."""
    return image_folder(embedded_root)


@pytest.fixture(scope="session")
def take(drawings):
    """``take(class_name, start, stop)``: images ``start:stop`` (image-id order) of a class, as PIL RGB."""

    def _take(class_name: str, start: int, stop: int) -> list:
        index = drawings.index
        ids = index.loc[index["class_name"] == class_name, "image_id"].tolist()[start:stop]
        assert len(ids) == stop - start, f"class {class_name} has too few images"
        return [drawings.load(image_id) for image_id in ids]

    return _take
