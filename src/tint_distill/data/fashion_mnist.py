"""Fashion-MNIST (Zalando, MIT licence) as a task folder: small grayscale product photos, a domain
the shipped clip-art generator never saw. Read from the IDX files of the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``); nothing is downloaded.

Labelled, unlabeled and ``base/`` images come from the training file, test and predict images
from the test file, so a test image is never one the task trained on. Plain numpy + PIL."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from tint_distill.data.sources import DataLayoutError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t_shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
DEFAULT_TASK_CLASSES = CLASSES[:5]  # the first five labels: no choice made after seeing results
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a numpy array: uint8 images ``[N, 28, 28]`` or labels ``[N]``."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataLayoutError(f"{path}: not an unsigned-byte IDX file.")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the ``train`` or ``test`` split, with a clear error when the package is missing."""
    images_file, labels_file = (folder / name for name in FILES[split])
    for file in (images_file, labels_file):
        if not file.is_file():
            raise DataLayoutError(f"{file} not found: Fashion-MNIST comes from the Debian package "
                                  "dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`), or pass "
                                  "--fashion-mnist-dir with the folder holding its four IDX .gz files.")
    return read_idx(images_file), read_idx(labels_file)


def build_fashion_mnist_task(folder: str | Path, task_root: str | Path, classes: list[str], images_per_class: int,
                             test_per_class: int = 0, unlabeled_per_class: int = 0, base_per_class: int = 0,
                             predict_root: str | Path | None = None, predict_per_class: int = 0,
                             seed: int = 0) -> dict[str, int]:
    """A task folder of Fashion-MNIST PNGs (28 x 28 grey): per task class ``images_per_class``
    labelled images, ``test_per_class`` under ``test/``, ``unlabeled_per_class`` under
    ``unlabeled/`` (named without their class) and ``predict_per_class`` in ``predict_root``; with
    ``base_per_class`` > 0, every other class gets that many labelled images under
    ``base/<class>/`` (other classes of the same domain). All different images, seeded.
    Refuses to write into a folder that already holds files. Returns the number of files written."""
    from PIL import Image

    folder, task_root = Path(folder), Path(task_root)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise ValueError(f"--classes: {unknown} are not Fashion-MNIST classes; use some of {list(CLASSES)}.")
    if len(set(classes)) < 2:
        raise ValueError("--classes: a task needs at least two different classes.")
    targets = [task_root] + ([Path(predict_root)] if predict_root else [])
    for target in targets:
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target} already holds files; choose another folder (nothing was written).")
    train_images, train_labels = load_split(folder, "train")
    test_images, test_labels = load_split(folder, "test")
    rng = np.random.default_rng(seed)
    written = {"labelled": 0, "test": 0, "unlabeled": 0, "base": 0, "predict": 0}

    def write(kind: str, target: Path, images: np.ndarray, indices: np.ndarray, prefix: str) -> None:
        if len(indices):
            target.mkdir(parents=True, exist_ok=True)
        for i in indices:
            Image.fromarray(images[i], mode="L").save(target / f"{prefix}_{int(i):05d}.png")
            written[kind] += 1

    for label, name in enumerate(CLASSES):
        train_pool = rng.permutation(np.flatnonzero(train_labels == label))
        test_pool = rng.permutation(np.flatnonzero(test_labels == label))
        if name in classes:
            ends = np.cumsum([images_per_class, unlabeled_per_class])
            write("labelled", task_root / name, train_images, train_pool[:ends[0]], name)
            write("unlabeled", task_root / "unlabeled", train_images, train_pool[ends[0]:ends[1]], "image")
            write("test", task_root / "test" / name, test_images, test_pool[:test_per_class], name)
            if predict_root:
                write("predict", Path(predict_root), test_images,
                      test_pool[test_per_class:test_per_class + predict_per_class], name)
        elif base_per_class:
            write("base", task_root / "base" / name, train_images, train_pool[:base_per_class], name)
    return written
