"""A user's task folder: its index, its final episode and leave-out splits, the example builder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tint_distill.data.sources import DataLayoutError
from tint_distill.data.task import (
    FINAL_EPISODE,
    TaskSettings,
    build_example_task,
    fold_count,
    task_episodes,
    task_folder,
)
from tint_distill.params import ParameterError, SettingError, settings_from_params


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


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_k_fold_splits_hold_out_each_image_once_and_never_train_on_it(tmp_path, embedded_root, folds):
    root = _task(tmp_path / "task", embedded_root, {"fish": 5, "clock": 2, "house": 1})
    index = task_folder(root).index
    episodes = task_episodes(index, folds)
    splits = sorted(set(episodes["episode"]) - {FINAL_EPISODE})
    assert splits == list(range(1, folds + 1)) and fold_count(index, folds) == folds
    held_out = []
    for split in splits:
        rows = episodes[episodes["episode"] == split]
        queries, supports = rows[rows["role"] == "query"], rows[rows["role"] == "support"]
        assert not set(queries["image_id"]) & set(supports["image_id"]), "a held-out image is never trained on"
        for name in ("fish", "clock"):  # every class keeps at least one support in every split
            assert (supports["class_name"] == name).sum() >= 1
        fish_held_out = (queries["class_name"] == "fish").sum()
        assert fish_held_out in (5 // folds, -(-5 // folds)), "the folds of a class differ by one image at most"
        clock = rows[rows["class_name"] == "clock"]
        assert len(clock) == 2 and (clock["role"] == "query").sum() == (1 if split <= 2 else 0), \
            "a class with fewer images than folds: one held out in each of its first K splits, all kept after"
        house = rows[rows["class_name"] == "house"]
        assert len(house) == 1 and house["role"].item() == "support", "a one-image class is never held out"
        held_out += queries["image_id"].tolist()
    labelled = index.loc[(index["split"] == "task") & (index["class_name"] != "house"), "image_id"]
    assert sorted(held_out) == sorted(labelled), "every image of a class with K >= 2 is held out exactly once"
    assert len(held_out) == len(set(held_out)) == 7


def test_the_number_of_folds_is_capped_by_the_largest_class_and_zero_turns_the_estimate_off(tmp_path, embedded_root):
    index = task_folder(_task(tmp_path / "task", embedded_root, {"fish": 3, "clock": 2})).index
    assert fold_count(index, 3) == 3 and fold_count(index, 10) == 3, "leave-one-out at most"
    assert set(task_episodes(index, 0)["episode"]) == {FINAL_EPISODE}
    with pytest.raises(SettingError, match="folds"):
        TaskSettings(folds=1)
    with pytest.raises(ParameterError, match="'max_repeats' is now folds"):
        settings_from_params(TaskSettings, {"max_repeats": 2}, "task")


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
    assert fold_count(index) == 0
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


def test_a_class_that_keeps_all_its_images_in_a_split_has_the_final_episodes_specialisation_key(tmp_path,
                                                                                              embedded_root):
    """Its specialisation (and so its synthetic images) is computed once: the store shares equal fingerprints."""
    from tint_distill.data.episodes import images_by_episode
    from tint_distill.stages.inversion import ClassTask, InversionSettings, specialisation_key

    images = task_folder(_task(tmp_path / "task", embedded_root, {"fish": 3, "clock": 2, "house": 1}))
    supports = images_by_episode(task_episodes(images.index, 3), "support")
    keys = {(episode, name): specialisation_key("model", ClassTask(episode, name, tuple(ids)), images,
                                                InversionSettings())
            for episode, classes in supports.items() for (_, name), ids in classes.items()}
    assert keys[(3, "clock")] == keys[(FINAL_EPISODE, "clock")], "clock keeps both its images in split 3"
    assert {keys[(e, "house")] for e in (1, 2, 3)} == {keys[(FINAL_EPISODE, "house")]}, "one image: never held out"
    assert len({keys[(e, "fish")] for e in (FINAL_EPISODE, 1, 2, 3)}) == 4, "other supports, other keys"
    assert len(keys) == 12 and len(set(keys.values())) == 4 + 3 + 1, "12 (episode, class) pairs, 8 to compute"
