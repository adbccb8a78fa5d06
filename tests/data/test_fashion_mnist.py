"""The Fashion-MNIST task folder builder, on small IDX files written here in the real format (the
Debian package is not on CI; where it is installed, the real files are read too)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tint_distill.data import fashion_mnist
from tint_distill.data.sources import DataLayoutError
from tint_distill.data.task import task_folder


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_folder(tmp_path) -> Path:
    folder = tmp_path / "fashion"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 12), ("test", 6)):
        labels = np.repeat(np.arange(10), per_class)
        # every image carries its label in its first pixel, so where an image went can be checked
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        images[:, 0, 0] = labels
        images_name, labels_name = fashion_mnist.FILES[split]
        _write_idx(folder / images_name, images)
        _write_idx(folder / labels_name, labels)
    return folder


def test_read_idx_gives_back_the_array_written(idx_folder):
    images, labels = fashion_mnist.load_split(idx_folder, "train")
    assert images.shape == (120, 28, 28) and labels.shape == (120,)
    assert (images[:, 0, 0] == labels).all()


def test_the_task_folder_has_the_promised_layout_and_labels(idx_folder, tmp_path):
    root, predict = tmp_path / "task", tmp_path / "predict"
    written = fashion_mnist.build_fashion_mnist_task(idx_folder, root, ["trouser", "bag"], 3, test_per_class=2,
                                                     unlabeled_per_class=4, base_per_class=2,
                                                     predict_root=predict, predict_per_class=1)
    assert written == {"labelled": 6, "test": 4, "unlabeled": 8, "base": 16, "predict": 2}
    for name in ("trouser", "bag"):
        label = fashion_mnist.CLASSES.index(name)
        for file in [*(root / name).iterdir(), *(root / "test" / name).iterdir()]:
            pixels = np.asarray(Image.open(file))
            assert pixels.shape == (28, 28) and pixels[0, 0] == label
    assert sorted(p.name for p in (root / "base").iterdir()) == sorted(
        set(fashion_mnist.CLASSES) - {"trouser", "bag"})
    assert all(p.name.startswith("image_") for p in (root / "unlabeled").iterdir())
    labelled = {p.name for name in ("trouser", "bag") for p in (root / name).iterdir()}
    unlabeled = {p.name.removeprefix("image_") for p in (root / "unlabeled").iterdir()}
    assert not {n.split("_")[-1] for n in labelled} & unlabeled  # no labelled image is also unlabeled
    plain = tmp_path / "plain"
    fashion_mnist.build_fashion_mnist_task(idx_folder, plain, ["trouser", "bag"], 3, test_per_class=2,
                                           unlabeled_per_class=4)
    index = task_folder(plain).index
    assert sorted(index.loc[index["split"] == "task", "class_name"].unique()) == ["bag", "trouser"]
    assert (index["split"] == "unlabeled").sum() == 8 and (index["split"] == "test").sum() == 4


def test_it_refuses_a_folder_with_files_and_names_the_missing_package(idx_folder, tmp_path):
    root = tmp_path / "task"
    root.mkdir()
    (root / "mine.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already holds files"):
        fashion_mnist.build_fashion_mnist_task(idx_folder, root, ["trouser", "bag"], 2)
    with pytest.raises(DataLayoutError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.build_fashion_mnist_task(tmp_path / "nowhere", tmp_path / "other", ["trouser", "bag"], 2)
    with pytest.raises(ValueError, match="not Fashion-MNIST classes"):
        fashion_mnist.build_fashion_mnist_task(idx_folder, tmp_path / "other", ["trousers", "bag"], 2)
