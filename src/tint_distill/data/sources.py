"""Builders of :class:`ImageCollection` for the layouts users have on disk.

Each builder only lists files and reads the small metadata files of its layout; pixels
are decoded later, one image at a time.

- ``image_folder``: ``root/<class>/<image>`` (any image suffix PIL reads).
- ``mini_imagenet``: Ravi & Larochelle split CSVs ``train.csv``/``val.csv``/``test.csv``
  (columns ``filename,label``) beside ``images/`` (flat, or one folder per label).
- ``cub_200_2011``: the official ``CUB_200_2011`` folder (``classes.txt``, ``images.txt``,
  ``image_class_labels.txt``, ``images/``), with a few-shot class split.
- ``cifar_fs``: the official ``cifar-100-python`` pickles with the CIFAR-FS class split
  files (``train.txt``/``val.txt``/``test.txt``, one class name per line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from tint_distill.data.collection import (
    FileReader,
    ImageCollection,
    PickledArrayReader,
    load_cifar_batch,
)
from tint_distill.data.images import is_image_file
from tint_distill.errors import UserInputError

# Benchmark split files name the splits train/val/test; the project says base/val/novel.
BENCHMARK_SPLIT_NAMES = {"train": "base", "val": "val", "test": "novel"}


class DataLayoutError(UserInputError, ValueError):
    """A data folder does not have the layout its loader expects."""


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataLayoutError(f"{path}: {what} folder not found; check the 'path' of this dataset in the catalog.")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataLayoutError(f"{path}: {what} not found; check the 'path' of this dataset in the catalog.")
    return path


def image_folder(root: str | Path, max_side: int | None = None) -> ImageCollection:
    """Images laid out as ``root/<class name>/<image file>``; splits come from configuration."""
    root = _require_dir(Path(root), "image")
    rows = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataLayoutError(
            f"{root}: no class folders found; expected one sub-folder per class with the images inside "
            "(root/<class>/<image>.png)."
        )
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if is_image_file(p))
        if not files:
            raise DataLayoutError(
                f"{class_dir}: class folder '{class_dir.name}' holds no images; add images or delete the folder."
            )
        for file in files:
            relative = file.relative_to(root).as_posix()
            rows.append((relative, class_dir.name, pd.NA, relative))
    index = pd.DataFrame(rows, columns=["image_id", "class_name", "split", "source"])
    return ImageCollection(index, FileReader(str(root)), f"image folder {root}", max_side)


def mini_imagenet(root: str | Path, max_side: int | None = None) -> ImageCollection:
    """miniImageNet with the Ravi & Larochelle CSVs (64 base / 16 val / 20 novel classes)."""
    root = _require_dir(Path(root), "miniImageNet")
    images_dir = _require_dir(root / "images", "miniImageNet images/")
    tables = []
    for file_split, split in BENCHMARK_SPLIT_NAMES.items():
        csv = _require_file(root / f"{file_split}.csv", f"miniImageNet split file {file_split}.csv")
        table = pd.read_csv(csv, dtype=str)
        if list(table.columns[:2]) != ["filename", "label"]:
            raise DataLayoutError(f"{csv}: expected the columns 'filename,label', found {list(table.columns)}.")
        table["split"] = split
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    flat = table["filename"]
    nested = table["label"] + "/" + table["filename"]
    source = flat.where([(images_dir / f).is_file() for f in flat], nested)
    missing = [s for s in source if not (images_dir / s).is_file()]
    if missing:
        raise DataLayoutError(
            f"{images_dir}: {len(missing)} images listed in the split CSVs are missing, e.g. '{missing[0]}'; "
            "expected images/<filename> or images/<label>/<filename>."
        )
    index = pd.DataFrame(
        {"image_id": table["filename"], "class_name": table["label"], "split": table["split"], "source": source}
    )
    return ImageCollection(index, FileReader(str(images_dir)), f"miniImageNet {root}", max_side)


def chen2019_cub_split(class_folders: Sequence[str]) -> dict[str, str]:
    """The CUB few-shot split of Chen et al. 2019 ("A Closer Look at Few-shot Classification"):
    with the 200 class folders in sorted order and i their 0-based position, i % 2 == 0 is base,
    i % 4 == 1 is val and i % 4 == 3 is novel (100 / 50 / 50 classes)."""
    splits = {}
    for i, name in enumerate(sorted(class_folders)):
        splits[name] = "base" if i % 2 == 0 else ("val" if i % 4 == 1 else "novel")
    return splits


def cub_200_2011(
    root: str | Path, max_side: int | None = None, class_splits: Mapping[str, Sequence[str]] | None = None
) -> ImageCollection:
    """CUB-200-2011 from its official metadata files; split from ``class_splits`` or Chen et al. 2019."""
    root = _require_dir(Path(root), "CUB_200_2011")
    images_dir = _require_dir(root / "images", "CUB images/")

    def read_pairs(name: str) -> pd.DataFrame:
        path = _require_file(root / name, f"CUB metadata file {name}")
        return pd.read_csv(path, sep=" ", header=None, names=["id", "value"], dtype=str)

    classes = read_pairs("classes.txt").set_index("id")["value"]
    images = read_pairs("images.txt").set_index("id")["value"]
    labels = read_pairs("image_class_labels.txt").set_index("id")["value"]
    folders = labels.map(classes)
    if folders.isna().any():
        raise DataLayoutError(f"{root / 'image_class_labels.txt'}: refers to class ids not in classes.txt.")
    if class_splits:
        split_of = {name: split for split, names in class_splits.items() for name in names}
    else:
        split_of = chen2019_cub_split(classes.tolist())
    index = pd.DataFrame(
        {
            "image_id": images.index.map(lambda i: images[i]),
            "class_name": folders.reindex(images.index).values,
            "split": folders.reindex(images.index).map(split_of).values,
            "source": images.values,
        }
    )
    missing = [s for s in index["source"] if not (images_dir / s).is_file()]
    if missing:
        raise DataLayoutError(f"{images_dir}: {len(missing)} images listed in images.txt are missing, e.g. '{missing[0]}'.")
    return ImageCollection(index, FileReader(str(images_dir)), f"CUB-200-2011 {root}", max_side)


def cifar_fs(
    root: str | Path, max_side: int | None = None, split_dir: str = "splits/bertinetto"
) -> ImageCollection:
    """CIFAR-FS: CIFAR-100 (train and test pickles pooled, 600 images per class) with the
    Bertinetto et al. 2019 class split (64 base / 16 val / 20 novel)."""
    root = _require_dir(Path(root), "CIFAR-FS")
    pickles = _require_dir(root / "cifar-100-python", "cifar-100-python")
    meta = load_cifar_batch(pickles / "meta")
    names = [n.decode() for n in meta[b"fine_label_names"]]
    split_of = {}
    for file_split, split in BENCHMARK_SPLIT_NAMES.items():
        split_file = _require_file(root / split_dir / f"{file_split}.txt", f"CIFAR-FS split file {file_split}.txt")
        for line in split_file.read_text().split():
            if line not in names:
                raise DataLayoutError(f"{split_file}: class '{line}' is not a CIFAR-100 class name.")
            split_of[line] = split
    rows = []
    for batch in ("train", "test"):
        labels = load_cifar_batch(pickles / batch)[b"fine_labels"]
        for row, label in enumerate(labels):
            name = names[label]
            rows.append((f"{batch}/{row:05d}", name, split_of.get(name, pd.NA), f"cifar-100-python/{batch}#{row}"))
    index = pd.DataFrame(rows, columns=["image_id", "class_name", "split", "source"])
    return ImageCollection(index, PickledArrayReader(str(root)), f"CIFAR-FS {root}", max_side)
