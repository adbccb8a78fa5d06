"""A user's task folder: its index, its final episode and leave-out splits, the example builder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tint_distill.data.sources import DataLayoutError
from tint_distill.data.task import (
    FINAL_EPISODE,
    build_example_task,
    leave_out_repeats,
    task_episodes,
    task_folder,
)


def _task(root: Path, embedded: Path, counts: dict[str, int], test: dict[str, int] | None = None) -> Path:
    for name, n in counts.items():
        files = sorted((embedded / name).glob("*.png"))
        (root / name).mkdir(parents=True)
        for file in files[:n]:
            shutil.copy(file, root / name / file.name)
        for file in files[n:n + (test or {}).get(name, 0)]:
            (root / "test" / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(file, root / "test" / name / file.name)
    return root


def test_the_final_episode_trains_on_every_labelled_image_and_tests_on_the_test_folder(tmp_path, embedded_root):
    root = _task(tmp_path / "task", embedded_root, {"fish": 3, "clock": 2}, test={"fish": 2})
    index = task_folder(root).index
    assert sorted(index["split"].unique()) == ["task", "test"]
    episodes = task_episodes(index)
    final = episodes[episodes["episode"] == FINAL_EPISODE]
    supports = final[final["role"] == "support"]
    assert sorted(supports["image_id"]) == sorted(index.loc[index["split"] == "task", "image_id"])
    tests = index.loc[index["split"] == "test", "image_id"]
    assert sorted(final.loc[final["role"] == "query", "image_id"]) == sorted(tests)
    assert dict(zip(final["class_name"], final["label"])) == {"clock": 0, "fish": 1}, "labels in sorted class order"


def test_leave_out_splits_hold_out_each_image_once_and_never_train_on_it(tmp_path, embedded_root):
    root = _task(tmp_path / "task", embedded_root, {"fish": 3, "clock": 2, "house": 1})
    index = task_folder(root).index
    episodes = task_episodes(index)
    splits = sorted(set(episodes["episode"]) - {FINAL_EPISODE})
    assert splits == [1, 2, 3] and leave_out_repeats(index) == 3
    held_out = []
    for split in splits:
        rows = episodes[episodes["episode"] == split]
        queries = rows[rows["role"] == "query"]
        scored = ["clock", "fish"] if split <= 2 else ["fish"]  # clock's two images are held out in splits 1 and 2
        assert sorted(queries["class_name"]) == scored, "one held-out image per class that has one left"
        assert not set(queries["image_id"]) & set(rows.loc[rows["role"] == "support", "image_id"])
        assert (rows["class_name"] == "clock").sum() == 2, "a class keeps all its images when none is held out"
        house = rows[rows["class_name"] == "house"]
        assert len(house) == 1 and house["role"].item() == "support", "a one-image class is never held out"
        held_out += queries["image_id"].tolist()
    labelled = index.loc[(index["split"] == "task") & (index["class_name"] != "house"), "image_id"]
    assert sorted(held_out) == sorted(labelled), "every image of a class with K >= 2 is held out exactly once"
    assert len(held_out) == len(set(held_out)) == 5
    assert task_episodes(index, max_repeats=2)["episode"].max() == 2


def test_unlabeled_images_are_indexed_without_a_class_and_never_in_an_episode(tmp_path, embedded_root):
    root = _task(tmp_path / "task", embedded_root, {"fish": 2, "clock": 2})
    (root / "unlabeled" / "batch1").mkdir(parents=True)
    for file in sorted((embedded_root / "house").glob("*.png"))[:3]:
        shutil.copy(file, root / "unlabeled" / "batch1" / file.name)
    index = task_folder(root).index
    unlabeled = index[index["split"] == "unlabeled"]
    assert len(unlabeled) == 3 and (unlabeled["class_name"] == "").all()
    assert sorted(index.loc[index["split"] == "task", "class_name"].unique()) == ["clock", "fish"]
    assert not set(task_episodes(index)["image_id"]) & set(unlabeled["image_id"])


def test_one_image_per_class_leaves_nothing_to_hold_out(tmp_path, embedded_root):
    index = task_folder(_task(tmp_path / "task", embedded_root, {"fish": 1, "clock": 1})).index
    assert leave_out_repeats(index) == 0
    assert set(task_episodes(index)["episode"]) == {FINAL_EPISODE}


def test_bad_task_folders_are_refused_with_the_folder_named(tmp_path, embedded_root):
    root = _task(tmp_path / "one", embedded_root, {"fish": 2})
    with pytest.raises(DataLayoutError, match="at least two class folders"):
        task_folder(root)
    root = _task(tmp_path / "stray", embedded_root, {"fish": 2, "clock": 2})
    (root / "test" / "house").mkdir(parents=True)
    shutil.copy(next((embedded_root / "house").glob("*.png")), root / "test" / "house" / "h.png")
    with pytest.raises(DataLayoutError, match="'house' is not one of the task's classes"):
        task_folder(root)
    (root / "empty").mkdir()
    with pytest.raises(DataLayoutError, match="'empty' holds no images"):
        task_folder(root)


def test_the_example_builder_copies_distinct_images_and_never_writes_into_a_full_folder(tmp_path, embedded_root):
    copied = build_example_task(embedded_root, tmp_path / "task", ["fish", "clock"], 3, 2, tmp_path / "predict", 1)
    assert copied == {"labelled": 6, "test": 4, "unlabeled": 0, "predict": 2}
    names = [p.name for p in (tmp_path / "task").rglob("*.png")] + [p.name.split("_", 1)[1] for p in
                                                                    (tmp_path / "predict").glob("*.png")]
    assert len(names) == len(set(names)) == 12, "no image is used twice"
    before = sorted(p.name for p in (tmp_path / "task").rglob("*"))
    with pytest.raises(FileExistsError, match="already holds files"):
        build_example_task(embedded_root, tmp_path / "task", ["fish", "clock"], 3)
    assert sorted(p.name for p in (tmp_path / "task").rglob("*")) == before
