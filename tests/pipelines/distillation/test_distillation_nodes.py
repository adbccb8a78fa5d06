"""Node-level checks of the distillation pipeline on the embedded drawings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tint_distill.data.episodes import EpisodeSpec, assign_class_splits, sample_episodes
from tint_distill.data.sources import image_folder
from tint_distill.distill.mining import nearest_to_supports
from tint_distill.params import ParameterError
from tint_distill.pipelines.distillation.nodes import (RealUnlabeledSettings, embed_candidate_images,
                                                       label_with_teacher, mine_real_images, real_unlabeled_ids)

SPLITS = {"base": ["mammal"], "val": ["tree"], "novel": ["fish", "fruit", "clock"]}
PARAMS = {"teacher": {"batch_size": 8}, "methods": ["supports_only", "real_unlabeled"], "real_unlabeled": {"images_per_class": 3}}


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
    before = label_with_teacher(images, episodes, index, {}, PARAMS["teacher"], PARAMS["methods"], PARAMS["real_unlabeled"])
    query = episodes[(episodes["episode"] == 1) & (episodes["role"] == "query")]["image_id"].iloc[0]
    shutil.copy(next((root / "mammal").glob("*.png")), root / query)  # same name, other pixels
    images, index, episodes = setup(root)
    after = label_with_teacher(images, episodes, index, {}, PARAMS["teacher"], PARAMS["methods"], PARAMS["real_unlabeled"])
    assert after["episode_0000"].fingerprint == before["episode_0000"].fingerprint
    assert after["episode_0001"].fingerprint != before["episode_0001"].fingerprint


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_mined_real_images_come_from_the_base_split_nearest_to_the_supports_first(embedded_root: Path,
                                                                                   tmp_path: Path):
    root = copy_classes(embedded_root, tmp_path / "images")
    images, index, episodes = setup(root)
    support = episodes[(episodes["episode"] == 0) & (episodes["role"] == "support")].iloc[0]
    shutil.copy(root / support["image_id"], root / "mammal" / "zz_support_copy.png")  # a base image = a support
    images, index, episodes = setup(root)
    methods, mined_real = ["tint", "mined_real"], {"images_per_class": 4}
    features = embed_candidate_images(images, index, PARAMS["teacher"], methods, mined_real)
    assert sorted(features) == ["mammal"]  # only the base split is mined
    mined = mine_real_images(images, index, episodes, features, PARAMS["teacher"], methods, mined_real, 20)
    assert len(mined) == 2 * 3 * 4  # episodes x classes x images_per_class (not the synthetic volume)
    assert set(mined["source_class"]) == {"mammal"} and mined["image_id"].str.startswith("mammal/").all()
    for _, rows in mined.groupby(["episode", "label"]):
        assert rows["rank"].tolist() == [0, 1, 2, 3]
        assert rows["similarity"].is_monotonic_decreasing
    first = mined[(mined["episode"] == 0) & (mined["class_name"] == support["class_name"])].iloc[0]
    assert first["image_id"] == "mammal/zz_support_copy.png" and first["similarity"] > 0.999
    assert embed_candidate_images(images, index, PARAMS["teacher"], ["tint"], mined_real) == {}  # not asked: nothing


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
        mine_real_images(images, index, episodes, {}, PARAMS["teacher"], ["mined_real"], {"split": "novel"}, 4)
