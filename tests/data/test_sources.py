"""Each loader on small real images written in that source's exact on-disk layout."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tint_distill.data import sources
from tint_distill.data.images import ImageReadError
from tint_distill.data.sources import DataLayoutError

CLASSES = ["fish", "fruit", "clock", "house", "bird", "flower"]


def drawings(embedded_root: Path, name: str, n: int) -> list[Path]:
    return sorted((embedded_root / name).glob("*.png"))[:n]


def test_image_folder_lists_without_decoding(small_folder: Path):
    victim = sorted((small_folder / "fish").glob("*.png"))[0]
    victim.write_bytes(b"corrupt")
    collection = sources.image_folder(small_folder)  # lazy: the corrupt file is not touched yet
    assert len(collection) == 32
    assert sorted(collection.index["class_name"].unique()) == ["clock", "fish", "fruit", "house"]
    assert collection.index["split"].isna().all()
    good = collection.index.loc[collection.index["class_name"] == "house", "image_id"].iloc[0]
    assert collection.load(good).mode == "RGB"
    with pytest.raises(ImageReadError, match=victim.name):
        collection.load(f"fish/{victim.name}")


def test_image_folder_errors(tmp_path: Path, small_folder: Path):
    with pytest.raises(DataLayoutError, match="not found"):
        sources.image_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataLayoutError, match="no class folders"):
        sources.image_folder(tmp_path / "empty")
    (small_folder / "ghost").mkdir()
    with pytest.raises(DataLayoutError, match="'ghost' holds no images"):
        sources.image_folder(small_folder)


@pytest.mark.parametrize("nested", [False, True])
def test_mini_imagenet_layout(tmp_path: Path, embedded_root: Path, nested: bool):
    root = tmp_path / "mini"
    rows = {"train": [], "val": [], "test": []}
    wnids = {name: f"n0{i:07d}" for i, name in enumerate(CLASSES)}
    for split, names in zip(rows, (CLASSES[:2], CLASSES[2:4], CLASSES[4:])):
        for name in names:
            for j, file in enumerate(drawings(embedded_root, name, 5)):
                filename = f"{wnids[name]}{j + 1:08d}.jpg"
                target = root / "images" / (f"{wnids[name]}/{filename}" if nested else filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.open(file).convert("RGB").resize((84, 84)).save(target, quality=90)
                rows[split].append((filename, wnids[name]))
    for split, table in rows.items():
        pd.DataFrame(table, columns=["filename", "label"]).to_csv(root / f"{split}.csv", index=False)

    collection = sources.mini_imagenet(root)
    assert len(collection) == 30
    per_split = collection.index.groupby("split")["class_name"].nunique().to_dict()
    assert per_split == {"base": 2, "val": 2, "novel": 2}
    first = collection.index["image_id"].iloc[0]
    assert collection.load(first).size == (84, 84)

    (root / "images" / collection.index["source"].iloc[0]).unlink()
    with pytest.raises(DataLayoutError, match="missing"):
        sources.mini_imagenet(root)


def write_cub(root: Path, embedded_root: Path, n_classes: int = 8, per_class: int = 3) -> None:
    names = [f"{i + 1:03d}.{CLASSES[i % len(CLASSES)].title()}_{i}" for i in range(n_classes)]
    image_lines, label_lines = [], []
    for c, folder in enumerate(names, start=1):
        (root / "images" / folder).mkdir(parents=True)
        for j, file in enumerate(drawings(embedded_root, CLASSES[(c - 1) % len(CLASSES)], per_class)):
            relative = f"{folder}/{folder.split('.')[1]}_{j:04d}.jpg"
            Image.open(file).convert("RGB").save(root / "images" / relative)
            image_lines.append(f"{len(image_lines) + 1} {relative}")
            label_lines.append(f"{len(label_lines) + 1} {c}")
    (root / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, start=1)))
    (root / "images.txt").write_text("\n".join(image_lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(label_lines) + "\n")


def test_cub_layout_and_chen_split(tmp_path: Path, embedded_root: Path):
    root = tmp_path / "CUB_200_2011"
    write_cub(root, embedded_root)
    collection = sources.cub_200_2011(root)
    assert len(collection) == 24
    split_of = collection.index.groupby("class_name")["split"].first()
    ordered = sorted(split_of.index)
    assert [split_of[n] for n in ordered] == ["base", "val", "base", "novel"] * 2
    assert collection.load(collection.index["image_id"].iloc[-1]).mode == "RGB"

    custom = sources.cub_200_2011(root, class_splits={"novel": ordered[:4], "base": ordered[4:]})
    assert (custom.index.groupby("split")["class_name"].nunique() == 4).all()

    (root / "classes.txt").unlink()
    with pytest.raises(DataLayoutError, match="classes.txt"):
        sources.cub_200_2011(root)


def write_cifar_fs(root: Path, embedded_root: Path, train: int = 4, test: int = 2) -> Path:
    """The official CIFAR-FS layout (cifar-100-python pickles, Bertinetto's split files) of real
    drawings at 32 px: the classes of CLASSES, 2 base, 2 val, the rest novel."""
    (root / "cifar-100-python").mkdir(parents=True)
    fine_names = CLASSES + ["spare"]
    for batch, per_class in (("train", train), ("test", test)):
        data, labels = [], []
        for label, name in enumerate(CLASSES):
            for file in drawings(embedded_root, name, 8)[:per_class]:
                pixels = np.asarray(Image.open(file).convert("RGB").resize((32, 32)))
                data.append(pixels.transpose(2, 0, 1).reshape(-1))
                labels.append(label)
        with (root / "cifar-100-python" / batch).open("wb") as handle:
            pickle.dump({b"data": np.stack(data).astype(np.uint8), b"fine_labels": labels}, handle)
    with (root / "cifar-100-python" / "meta").open("wb") as handle:
        pickle.dump({b"fine_label_names": [n.encode() for n in fine_names]}, handle)
    split_dir = root / "splits" / "bertinetto"
    split_dir.mkdir(parents=True)
    for split, names in (("train", CLASSES[:2]), ("val", CLASSES[2:4]), ("test", CLASSES[4:])):
        (split_dir / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_cifar_fs_layout(tmp_path: Path, embedded_root: Path):
    root = write_cifar_fs(tmp_path / "cifar-fs", embedded_root)
    split_dir = root / "splits" / "bertinetto"
    collection = sources.cifar_fs(root)
    assert len(collection) == 36
    assert collection.index.groupby("class_name").size().eq(6).all()
    first = collection.index[collection.index["class_name"] == "fish"]["image_id"].iloc[0]
    image = collection.load(first)
    assert image.size == (32, 32)
    expected = Image.open(drawings(embedded_root, "fish", 1)[0]).convert("RGB").resize((32, 32))
    assert np.array_equal(np.asarray(image), np.asarray(expected))

    (split_dir / "test.txt").write_text("unicorn\n")
    with pytest.raises(DataLayoutError, match="unicorn"):
        sources.cifar_fs(root)
    shutil.rmtree(split_dir)
    with pytest.raises(DataLayoutError, match="train.txt"):
        sources.cifar_fs(root)


class _RunsCode:
    """What a crafted pickle does: call any function while it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar_batches_load_only_arrays_and_lists(tmp_path: Path):
    """A CIFAR file that would run code when unpickled is refused, naming the file and the global."""
    from tint_distill.data.collection import load_cifar_batch

    good, crafted, marker = tmp_path / "data_batch", tmp_path / "train", tmp_path / "code_ran"
    arrays = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"fine_labels": [3, 7], b"batch": b"x"}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):  # the release's protocol (written by Python 3 here) and today's
        good.write_bytes(pickle.dumps(arrays, protocol=protocol))
        loaded = load_cifar_batch(good)
        assert np.array_equal(loaded[b"data"], arrays[b"data"]) and loaded[b"fine_labels"] == [3, 7]
    crafted.write_bytes(pickle.dumps({b"data": _RunsCode(marker)}))
    with pytest.raises(ImageReadError, match=r"train: .*global 'pathlib.*touch'"):
        load_cifar_batch(crafted)
    assert not marker.exists(), "nothing in the crafted file ran"
