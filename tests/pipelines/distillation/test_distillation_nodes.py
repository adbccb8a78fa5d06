"""Node-level checks of the distillation pipeline on the embedded drawings."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from tint_distill.data.episodes import EpisodeSpec, assign_class_splits, sample_episodes
from tint_distill.data.sources import image_folder
from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.errors import NonFiniteLossError
from tint_distill.distill.mining import nearest_to_supports
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings, create_teacher, extract_features
from tint_distill.execution import ExecutionSettings
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings, real_unlabeled_ids
from tint_distill.params import ParameterError
from tint_distill.pipelines.distillation.nodes import (embed_candidate_images, label_with_teacher, mine_real_images,
                                                       train_students)
from tint_distill.work import Stored, UnitFailed, Work

SPLITS = {"base": ["mammal"], "val": ["tree"], "novel": ["fish", "fruit", "clock"]}
# The blocks as Kedro gives them to the nodes (typed settings)
TEACHER = TeacherSettings(batch_size=8)
METHODS = ["supports_only", "real_unlabeled"]
REAL_UNLABELED = RealUnlabeledSettings(images_per_class=3)
LOCAL = ExecutionSettings()


def not_mined(images, index, episodes):
    """The mine_real_images node's output when no method mines (what the other nodes get then)."""
    return mine_real_images(images, index, episodes, {}, TEACHER, METHODS, MinedRealSettings(), 20)


def saved(work: Work, folder: Path, dataset: str, suffix: str) -> dict[str, Stored]:
    """``work`` saved by its catalog dataset and read back, as the next node gets it."""
    store = ResumablePartitionedDataset(path=str(folder), dataset=dataset, filename_suffix=suffix)
    store.save(work)
    return store.load()


def copy_classes(embedded_root: Path, root: Path) -> Path:
    for name in ("mammal", "tree", "fish", "fruit", "clock"):
        shutil.copytree(embedded_root / name, root / name)
    return root


def setup(root: Path):
    images = image_folder(root)
    index = assign_class_splits(images.index, SPLITS)
    episodes = sample_episodes(index, EpisodeSpec(n_way=3, n_shot=2, n_query=3, n_episodes=2, seed=1))
    return images, index, episodes


def test_real_unlabeled_images_never_leak_the_episodes_own_images(embedded_root: Path, tmp_path: Path):
    images, index, episodes = setup(copy_classes(embedded_root, tmp_path / "images"))
    settings = RealUnlabeledSettings(images_per_class=5, seed=0)
    for episode in (0, 1):
        chosen = real_unlabeled_ids(index, episodes, episode, settings)
        rows = episodes[episodes["episode"] == episode]
        used = set(rows["image_id"])
        for label, ids in chosen.items():
            name = rows.loc[rows["label"] == label, "class_name"].iloc[0]
            assert len(ids) == 5 and not used & set(ids), "never a support or query of the episode"
            assert set(index.loc[index["image_id"].isin(ids), "class_name"]) == {name}, "images of its own class"
        assert chosen == real_unlabeled_ids(index, episodes, episode, settings), "seeded: the same each time"


def test_teacher_outputs_are_recomputed_when_a_query_image_changes(embedded_root: Path, tmp_path: Path):
    root = copy_classes(embedded_root, tmp_path / "images")
    images, index, episodes = setup(root)
    before = label_with_teacher(images, episodes, index, {}, TEACHER, METHODS, REAL_UNLABELED,
                                not_mined(images, index, episodes), LOCAL)
    assert sorted(before.units) == ["episode_0000", "episode_0001"]
    query = episodes[(episodes["episode"] == 1) & (episodes["role"] == "query")]["image_id"].iloc[0]
    shutil.copy(next((root / "mammal").glob("*.png")), root / query)  # same name, other pixels
    images, index, episodes = setup(root)
    after = label_with_teacher(images, episodes, index, {}, TEACHER, METHODS, REAL_UNLABELED,
                               not_mined(images, index, episodes), LOCAL)
    assert after.units["episode_0000"].fingerprint == before.units["episode_0000"].fingerprint
    assert after.units["episode_0001"].fingerprint != before.units["episode_0001"].fingerprint


def test_where_the_teacher_and_students_run_does_not_change_their_keys(embedded_root: Path, tmp_path: Path):
    """A result computed on a CPU is reused on a GPU and the other way round; bf16 is computed apart."""
    images, index, episodes = setup(copy_classes(embedded_root, tmp_path / "images"))
    mined = not_mined(images, index, episodes)

    def teacher_keys(**settings) -> dict[str, str]:
        work = label_with_teacher(images, episodes, index, {}, dataclasses.replace(TEACHER, **settings), METHODS,
                                  REAL_UNLABELED, mined, LOCAL)
        return {key: unit.fingerprint for key, unit in work.units.items()}

    def student_keys(**settings) -> dict[str, str]:
        outputs = {key: Stored(fingerprint, dict) for key, fingerprint in teacher_keys().items()}
        work = train_students(images, episodes, index, {}, outputs, METHODS, StudentSettings(init="scratch"),
                              DistillationConfig(**settings), REAL_UNLABELED, mined, None, LOCAL)
        return {key: unit.fingerprint for key, unit in work.units.items()}

    assert teacher_keys(device="cpu") == teacher_keys(device="auto") == teacher_keys(device="cuda")
    assert set(teacher_keys(precision="bf16").values()).isdisjoint(teacher_keys().values())
    assert student_keys(device="cpu") == student_keys(device="auto") == student_keys(device="cuda")
    assert set(student_keys(precision="bf16").values()).isdisjoint(student_keys().values())


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_mined_real_images_come_from_the_base_split_nearest_to_the_supports_first(embedded_root: Path,
                                                                                   tmp_path: Path):
    root = copy_classes(embedded_root, tmp_path / "images")
    images, index, episodes = setup(root)
    support = episodes[(episodes["episode"] == 0) & (episodes["role"] == "support")].iloc[0]
    shutil.copy(root / support["image_id"], root / "mammal" / "zz_support_copy.png")  # a base image = a support
    images, index, episodes = setup(root)
    methods, mined_real = ["tint", "mined_real"], MinedRealSettings(images_per_class=4)
    work = embed_candidate_images(images, index, TEACHER, methods, mined_real, LOCAL)
    assert sorted(work.units) == ["mammal"]  # only the base split is mined
    features = saved(work, tmp_path / "features", "tint_distill.datasets.TensorDictDataset", ".safetensors")
    assert sorted(features) == ["mammal"]
    mined = mine_real_images(images, index, episodes, features, TEACHER, methods, mined_real, 20)
    decoded, decode = [], images.load
    images.load = lambda image_id: decoded.append(image_id) or decode(image_id)
    again = pd.concat([episodes, episodes.assign(episode=episodes["episode"] + 2)])  # episodes 2, 3: 0, 1 again
    twice = mine_real_images(images, index, again, features, TEACHER, methods, mined_real, 20)
    images.load = decode
    assert sorted(decoded) == sorted(set(episodes.loc[episodes["role"] == "support", "image_id"])), \
        "each distinct support is decoded and embedded once, however many episodes share it"
    assert twice.assign(episode=twice["episode"] % 2).iloc[len(mined):].reset_index(drop=True).equals(mined)
    assert len(mined) == 2 * 3 * 4  # episodes x classes x images_per_class (not the synthetic volume)
    teacher, candidates = create_teacher(TEACHER), torch.cat([features["mammal"]()["features"]])
    for (episode, label), rows in mined.groupby(["episode", "label"]):  # as embedding each class's supports alone
        ids = episodes.loc[(episodes["episode"] == episode) & (episodes["label"] == label)
                           & (episodes["role"] == "support"), "image_id"]
        alone = extract_features(teacher, [images.load(i) for i in ids], TEACHER.batch_size)
        index_alone, similarity_alone = nearest_to_supports(alone, candidates, 4)
        assert rows["image_id"].tolist() == [sorted(index["image_id"][index["class_name"] == "mammal"])[i]
                                             for i in index_alone.tolist()]
        assert rows["similarity"].tolist() == pytest.approx(similarity_alone.tolist(), abs=1e-5)
    assert set(mined["source_class"]) == {"mammal"} and mined["image_id"].str.startswith("mammal/").all()
    for _, rows in mined.groupby(["episode", "label"]):
        assert rows["rank"].tolist() == [0, 1, 2, 3]
        assert rows["similarity"].is_monotonic_decreasing
    first = mined[(mined["episode"] == 0) & (mined["class_name"] == support["class_name"])].iloc[0]
    assert first["image_id"] == "mammal/zz_support_copy.png" and first["similarity"] > 0.999
    assert embed_candidate_images(images, index, TEACHER, ["tint"], mined_real, LOCAL) == {}  # not asked: nothing
    assert len(mine_real_images(images, index, episodes, features, TEACHER, methods,
                                MinedRealSettings(), 2)) == 2 * 3 * 2, "null: the synthetic volume"


def test_nearest_to_supports_ranks_by_the_closest_support():
    supports = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 2.0], [3.0, 0.1]])
    index, similarity = nearest_to_supports(supports, candidates, 3)
    assert index.tolist() == [2, 3, 0]  # same direction as a support first, whatever the length
    assert similarity[0] == pytest.approx(1.0) and similarity[2] == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError, match="different backbones"):
        nearest_to_supports(supports, torch.ones(2, 3), 1)


def test_mined_real_refuses_a_split_of_the_episodes_own_classes(embedded_root: Path, tmp_path: Path):
    images, index, episodes = setup(copy_classes(embedded_root, tmp_path / "images"))
    with pytest.raises(ParameterError, match="episodes' own classes"):
        mine_real_images(images, index, episodes, {}, TEACHER, ["mined_real"], MinedRealSettings(split="novel"), 4)


def test_a_diverging_student_fails_alone_and_the_others_are_saved(embedded_root: Path, tmp_path: Path):
    """A student whose loss turns non-finite (here: NaN teacher logits for one method of one
    episode) fails alone: every other student is saved, and the store names the failed one."""
    images, index, episodes = setup(copy_classes(embedded_root, tmp_path / "images"))
    mined = not_mined(images, index, episodes)
    teacher = saved(label_with_teacher(images, episodes, index, {}, TEACHER, METHODS, REAL_UNLABELED, mined, LOCAL),
                    tmp_path / "teacher", "tint_distill.datasets.TensorDictDataset", ".safetensors")
    labels = teacher["episode_0001"]()
    poisoned = {**labels, "real_unlabeled.logits": torch.full_like(labels["real_unlabeled.logits"], float("nan"))}
    healthy = teacher["episode_0001"]
    teacher["episode_0001"] = Stored(healthy.fingerprint, lambda: poisoned)  # the same inputs, as far as keys go

    def students() -> Work:
        return train_students(images, episodes, index, {}, teacher, METHODS,
                              StudentSettings(init="scratch", keep_weights=()),
                              DistillationConfig(epochs=1, batch_size=16), REAL_UNLABELED, mined, None, LOCAL)

    work = students()
    assert sorted(work.units) == ["real_unlabeled/episode_0000", "real_unlabeled/episode_0001",
                                  "supports_only/episode_0000", "supports_only/episode_0001"]
    store = ResumablePartitionedDataset(path=str(tmp_path / "students"),
                                        dataset="tint_distill.datasets.StudentResultDataset", filename_suffix=".json")
    with pytest.raises(DatasetError, match=r"1 of 4 partitions .* failed \(real_unlabeled/episode_0001\); all the "
                                           r"others are saved.*student training: non-finite loss") as raised:
        store.save(work)
    failure = raised.value.__cause__
    assert isinstance(failure, UnitFailed) and isinstance(failure.__cause__, NonFiniteLossError)
    results = store.load()
    assert sorted(results) == ["real_unlabeled/episode_0000", "supports_only/episode_0000",
                               "supports_only/episode_0001"]
    assert all(0 <= results[key]()["accuracy"] <= 1 for key in results)
    assert results["real_unlabeled/episode_0000"]()["n_unlabeled"] == 3 * 3

    teacher["episode_0001"] = healthy
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "students").rglob("*.done")}
    store.save(students())  # the rerun trains only the student that failed
    assert sorted(store.load()) == sorted(work.units)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "the saved students were reused"
    assert len(list((tmp_path / "students").rglob("*.done"))) == 4, "one more student, no other version"
