import io
from pathlib import Path

import pandas as pd
import pytest

from tint_distill.data import sources
from tint_distill.params import ParameterError
from tint_distill.data.episodes import (
    EpisodeConfigError,
    EpisodeSpec,
    assign_class_splits,
    episode_images,
    images_by_episode,
    sample_episodes,
)

SPLITS = {"base": ["fruit"], "val": [], "novel": ["fish", "clock", "house"]}


@pytest.fixture
def index(small_folder: Path) -> pd.DataFrame:
    return assign_class_splits(sources.image_folder(small_folder).index, SPLITS)


def as_csv(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def test_same_seed_same_bytes_other_seed_differs(index):
    spec = EpisodeSpec(n_way=3, n_shot=2, n_query=3, n_episodes=6, seed=11)
    first, second = sample_episodes(index, spec), sample_episodes(index.sample(frac=1, random_state=3), spec)
    assert as_csv(first) == as_csv(second), "row order of the source must not matter"
    other = sample_episodes(index, EpisodeSpec(n_way=3, n_shot=2, n_query=3, n_episodes=6, seed=12))
    assert as_csv(other) != as_csv(first)


def test_episode_does_not_depend_on_how_many_are_drawn(index):
    few = sample_episodes(index, EpisodeSpec(n_way=2, n_shot=1, n_query=2, n_episodes=3, seed=0))
    many = sample_episodes(index, EpisodeSpec(n_way=2, n_shot=1, n_query=2, n_episodes=9, seed=0))
    pd.testing.assert_frame_equal(few, many[many["episode"] < 3].reset_index(drop=True))


def test_every_episodes_images_in_one_pass_are_each_episodes_own(index):
    episodes = sample_episodes(index, EpisodeSpec(n_way=3, n_shot=2, n_query=3, n_episodes=5, seed=4))
    for role in ("support", "query"):
        together = images_by_episode(episodes, role)
        assert together == {e: episode_images(episodes, e, role) for e in range(5)}
        assert list(together) == list(range(5)) and all(len(classes) == 3 for classes in together.values())


def test_episode_structure(index):
    spec = EpisodeSpec(n_way=3, n_shot=2, n_query=5, n_episodes=20, seed=1)
    episodes = sample_episodes(index, spec)
    assert len(episodes) == 20 * 3 * 7
    for _, episode in episodes.groupby("episode"):
        assert sorted(episode["label"].unique()) == [0, 1, 2]
        assert episode["class_name"].nunique() == 3
        assert not episode["image_id"].duplicated().any(), "support and query images never overlap"
        roles = episode.groupby(["label", "role"]).size().unstack()
        assert (roles["support"] == 2).all() and (roles["query"] == 5).all()
        assert set(episode["class_name"]) <= set(SPLITS["novel"])
        assert (episode["image_id"].str.split("/").str[0] == episode["class_name"]).all()
    # over 20 episodes every novel class and many images get used
    assert set(episodes["class_name"]) == set(SPLITS["novel"])


def test_too_few_images_names_the_class_and_folder(index):
    index = index[~((index["class_name"] == "clock") & (index["image_id"] > "clock/c"))]
    n_clock = (index["class_name"] == "clock").sum()
    assert n_clock < 7
    with pytest.raises(EpisodeConfigError) as error:
        sample_episodes(index, EpisodeSpec(n_way=2, n_shot=2, n_query=5, n_episodes=1))
    message = str(error.value)
    assert "class 'clock'" in message and "folder 'clock'" in message and f"has {n_clock} images" in message
    assert "\n" not in message


def test_n_way_larger_than_split(index):
    with pytest.raises(EpisodeConfigError, match="n_way' is 4 but split 'novel' has only 3 classes"):
        sample_episodes(index, EpisodeSpec(n_way=4, n_shot=1, n_query=1, n_episodes=1))


def test_split_configuration_errors(small_folder: Path):
    raw = sources.image_folder(small_folder).index
    with pytest.raises(EpisodeConfigError, match="class 'house' .* is in no split"):
        assign_class_splits(raw, {"base": ["fruit"], "novel": ["fish", "clock"]})
    with pytest.raises(EpisodeConfigError, match="'unicorn' is listed"):
        assign_class_splits(raw, {"base": ["fruit", "unicorn"], "novel": ["fish", "clock", "house"]})
    with pytest.raises(EpisodeConfigError, match="both 'base' and 'novel'"):
        assign_class_splits(raw, {"base": ["fruit", "fish"], "novel": ["fish", "clock", "house"]})
    with pytest.raises(EpisodeConfigError, match="have no split"):
        assign_class_splits(raw, None)


def test_spec_from_params_validates():
    assert EpisodeSpec.from_params({"n_way": 2, "split": "val"}).n_way == 2
    with pytest.raises(ParameterError, match="unknown keys \\['n_ways'\\]"):
        EpisodeSpec.from_params({"n_ways": 2})
    with pytest.raises(EpisodeConfigError, match="n_shot' must be a positive integer"):
        EpisodeSpec.from_params({"n_shot": 0})
    with pytest.raises(EpisodeConfigError, match="split' must be one of"):
        EpisodeSpec.from_params({"split": "test"})
