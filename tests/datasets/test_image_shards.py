"""Synthetic images stored as one shard per (sampler, episode, class): exact round trip, partitions
saved as one PNG per image by earlier versions still reused and read to the same pixels, and every
consumer (methods, teacher, students, preview grids) working on shards as on PNGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import AbstractDataset, DatasetError
from PIL import Image
from safetensors import safe_open

from tint_distill.data.episodes import EpisodeSpec, episode_images, sample_episodes
from tint_distill.data.image_batch import ImageBatch
from tint_distill.data.model_input import square_image
from tint_distill.data.sources import image_folder
from tint_distill.datasets import ImageSetDataset, ResumableImageSetsDataset
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.execution import ExecutionSettings
from tint_distill.keys import partition_key
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings
from tint_distill.pipelines.distillation.nodes import label_with_teacher, mine_real_images, train_students
from tint_distill.stages.synthesis import PreviewSettings, preview_grids
from tint_distill.work import Work


class PNGPerImageDataset(AbstractDataset[list, list]):
    """How ``ImageSetDataset`` saved a partition before shards: ``00000.png, 00001.png, ...``."""

    def __init__(self, *, filepath: str):
        self._filepath = Path(filepath)

    def save(self, data: list) -> None:
        self._filepath.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(data):
            image.save(self._filepath / f"{index:05d}.png")

    def load(self) -> list:
        raise NotImplementedError("only writes partitions the old way")

    def _describe(self) -> dict:
        return {"filepath": str(self._filepath)}


def drawings(embedded_root: Path, name: str, n: int, side: int = 32) -> list[Image.Image]:
    """Real drawings at a synthetic image's size (what the generator's images look like to storage)."""
    files = sorted((embedded_root / name).glob("*.png"))[:n]
    return [square_image(Image.open(f)).resize((side, side), Image.BILINEAR) for f in files]


def store(path: Path, dataset=ImageSetDataset) -> ResumableImageSetsDataset:
    return ResumableImageSetsDataset(path=str(path), dataset=dataset)


def same_pixels(loaded, images: list[Image.Image]) -> bool:
    return len(loaded) == len(images) and all(np.array_equal(np.asarray(a), np.asarray(b))
                                              for a, b in zip(loaded, images))


def test_a_partition_is_one_shard_and_a_preview_and_round_trips_exactly(embedded_root: Path, tmp_path: Path):
    images = drawings(embedded_root, "fish", 20)
    dataset = ImageSetDataset(filepath=str(tmp_path / "set"))
    dataset.save(images)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["images.safetensors", "preview.png"]
    with safe_open(str(tmp_path / "set" / "images.safetensors"), "pt") as shard:
        assert shard.get_slice("images").get_shape() == [20, 3, 32, 32]
        assert shard.get_slice("images").get_dtype() == "U8"
    loaded = dataset.load()
    assert isinstance(loaded, ImageBatch) and loaded.pixels.shape == (20, 3, 32, 32)
    assert same_pixels(loaded, images), "every pixel as generated"
    preview = Image.open(tmp_path / "set" / "preview.png")
    assert preview.size == (8 * 34 + 2, 2 * 34 + 2), "the first 16 images, two rows of eight"
    first_cell = np.asarray(preview.convert("RGB"))[2:34, 2:34]
    assert np.array_equal(first_cell, np.asarray(images[0]))
    assert (tmp_path / "set" / "images.safetensors").read_bytes() == _saved_again(images, tmp_path / "again"), \
        "the same images give the same bytes (the marker's hash means something)"
    with pytest.raises(DatasetError, match="one size"):
        dataset.save(images[:2] + [images[2].resize((16, 16))])


def test_a_batch_joins_with_other_images_as_the_task_pipeline_adds_its_unlabeled_ones(embedded_root: Path):
    images = drawings(embedded_root, "fish", 3)
    batch, user_image = ImageBatch.of(images), drawings(embedded_root, "clock", 1, side=50)[0]
    assert batch + [] is batch and (batch[:2] + batch[2:]) == batch, "one size: still one batch"
    joined = batch + [user_image]  # another size: a list of PIL images, the batch's made from its pixels
    assert isinstance(joined, list) and same_pixels(joined, images + [user_image])
    assert same_pixels([user_image] + batch, [user_image] + images)


def _saved_again(images: list[Image.Image], folder: Path) -> bytes:
    ImageSetDataset(filepath=str(folder)).save(images)
    return (folder / "images.safetensors").read_bytes()


def test_a_partition_saved_as_pngs_by_the_previous_version_is_reused_and_reads_the_same_pixels(
        embedded_root: Path, tmp_path: Path):
    images = drawings(embedded_root, "fish", 6)
    calls = []

    def work():
        calls.append(1)
        return images

    old = store(tmp_path / "synthetic", PNGPerImageDataset)
    old.save(Work.of_functions({"tint/episode_0000/fish": ("v1", work)}))
    old.complete_run()
    folder = next((tmp_path / "synthetic").glob("tint/episode_0000/fish/v1"))
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(6)]

    new = store(tmp_path / "synthetic")
    new.save(Work.of_functions({"tint/episode_0000/fish": ("v1", work)}))  # the same fingerprint: reused
    assert calls == [1], "a finished PNG partition is reused, not regenerated"
    loaded = new.load()["tint/episode_0000/fish"]()
    assert isinstance(loaded, ImageBatch) and same_pixels(loaded, images)
    assert new.preview(nrows=1).startswith("iVBOR"), "Kedro-Viz's grid draws it (a PNG, base64)"

    (folder / "00003.png").unlink()  # the done marker still protects a PNG partition
    with pytest.raises(DatasetError, match=r"missing: 00003.png"):
        new.load()
    new.save(Work.of_functions({"tint/episode_0000/fish": ("v1", work)}))
    assert calls == [1, 1] and (folder / "images.safetensors").is_file(), "recomputed, as a shard"
    assert same_pixels(new.load()["tint/episode_0000/fish"](), images)


# --- consumers ------------------------------------------------------------------------------------

CLASSES = ("fish", "fruit", "clock")


@pytest.fixture
def episode(embedded_root: Path, tmp_path: Path):
    root = tmp_path / "images"
    for name in CLASSES:
        shutil.copytree(embedded_root / name, root / name)
    images = image_folder(root)
    index = images.index.assign(split="novel")
    episodes = sample_episodes(index, EpisodeSpec(n_way=3, n_shot=2, n_query=2, n_episodes=1, seed=1))
    return images, index, episodes


def synthetic_stores(embedded_root: Path, tmp_path: Path, episodes) -> dict[str, dict]:
    """The same synthetic images (4 drawings per class of episode 0, at 32 px) saved as shards and
    the old way, read back as the distillation nodes get them."""
    functions = {}
    for (label, name), _ in episode_images(episodes, 0, "support").items():
        pictures = drawings(embedded_root, name, 12)[-4:]  # not the supports: the last of the class
        functions[partition_key(0, name, "tint")] = ("v-" + name, lambda p=pictures: p)
    loaded = {}
    for kind, dataset in (("shards", ImageSetDataset), ("pngs", PNGPerImageDataset)):
        partitions = store(tmp_path / kind, dataset)
        partitions.save(Work.of_functions(functions))
        loaded[kind] = store(tmp_path / kind).load()
    return loaded


def test_teacher_and_students_get_from_a_shard_exactly_what_they_got_from_pngs(embedded_root: Path, tmp_path: Path,
                                                                             episode):
    images, index, episodes = episode
    synthetic = synthetic_stores(embedded_root, tmp_path, episodes)
    assert isinstance(synthetic["shards"][partition_key(0, "fish", "tint")](), ImageBatch)
    teacher, settings = {}, TeacherSettings(batch_size=8)
    real, local = RealUnlabeledSettings(), ExecutionSettings()
    mined = mine_real_images(images, index, episodes, {}, settings, ["tint"], MinedRealSettings(), 4)
    results = {}
    for kind, partitions in synthetic.items():
        work = label_with_teacher(images, episodes, index, partitions, settings, ["tint"], real, mined, local)
        outcome = next(iter(work.engine.run(work, list(work.units.values()))))
        teacher[kind] = (work.units["episode_0000"].fingerprint, outcome.value)
        stored = {"episode_0000": _stored(teacher[kind][0], outcome.value)}
        students = train_students(images, episodes, index, partitions, stored, ["tint"],
                                  StudentSettings(init="scratch", keep_weights=()),
                                  DistillationConfig(epochs=1, batch_size=8), real, mined, None, local)
        results[kind] = next(iter(students.engine.run(students, list(students.units.values())))).value
    assert teacher["shards"][0] == teacher["pngs"][0], "the storage does not change what the teacher's key says"
    logits = teacher["shards"][1]["tint.logits"]
    assert logits.shape == (3 * 4, 3) and torch.equal(logits, teacher["pngs"][1]["tint.logits"])
    assert results["shards"]["n_unlabeled"] == 12
    for field in ("accuracy", "query_predictions", "teacher_agreement_on_unlabeled"):
        assert results["shards"][field] == results["pngs"][field], field
    assert [h["loss"] for h in results["shards"]["history"]] == [h["loss"] for h in results["pngs"]["history"]]


def _stored(fingerprint: str, value):
    from tint_distill.work import Stored

    return Stored(fingerprint, lambda: value)


def test_the_preview_grids_draw_shards(embedded_root: Path, tmp_path: Path, episode):
    images, _, episodes = episode
    synthetic = synthetic_stores(embedded_root, tmp_path, episodes)
    settings = PreviewSettings(n_episodes=1, n_images=3, cell_size=24)
    grids = {kind: preview_grids(None, images, episodes, {}, partitions, settings)  # no specialisation: no model
             for kind, partitions in synthetic.items()}
    assert list(grids["shards"]) == ["episode_0000"]
    assert grids["shards"]["episode_0000"].tobytes() == grids["pngs"]["episode_0000"].tobytes()
