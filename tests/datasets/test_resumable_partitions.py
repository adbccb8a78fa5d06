from pathlib import Path

import pytest
from kedro.io import DatasetError

from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.work import Deferred


class Counter:
    def __init__(self):
        self.calls = []

    def work(self, key: str, value: int, fail: bool = False) -> Deferred:
        def compute():
            if fail:
                raise RuntimeError(f"interrupted while computing {key}")
            self.calls.append(key)
            return {"key": key, "value": value}

        return Deferred(f"{key}-{value}", compute)


def dataset(path: Path) -> ResumablePartitionedDataset:
    return ResumablePartitionedDataset(path=str(path), dataset="json.JSONDataset", filename_suffix=".json")


def test_saves_lazily_skips_done_and_recomputes_changed(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    keys = ["episode_0000/fish", "episode_0000/fruit", "episode_0001/clock"]
    store.save({k: counter.work(k, 1) for k in keys})
    assert counter.calls == keys
    loaded = store.load()
    assert sorted(loaded) == keys and loaded["episode_0001/clock"]() == {"key": "episode_0001/clock", "value": 1}
    assert loaded["episode_0000/fish"].fingerprint == "episode_0000/fish-1"

    counter.calls.clear()
    store.save({k: counter.work(k, 2 if k.endswith("fruit") else 1) for k in keys})
    assert counter.calls == ["episode_0000/fruit"], "only the partition whose inputs changed is recomputed"
    assert store.load()["episode_0000/fruit"]()["value"] == 2


def test_interrupted_save_keeps_finished_partitions_and_resumes(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    keys = [f"episode_0000/c{i}" for i in range(4)]
    with pytest.raises(DatasetError, match="interrupted while computing episode_0000/c2"):
        store.save({k: counter.work(k, 1, fail=(k.endswith("c2"))) for k in keys})
    assert sorted(store.load()) == keys[:2], "what was computed before the failure is kept"

    counter.calls.clear()
    store.save({k: counter.work(k, 1) for k in keys})
    assert counter.calls == keys[2:], "the rerun computes only the unfinished partitions"


def test_half_written_partition_without_marker_is_redone(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({"a": counter.work("a", 1)})
    (tmp_path / "parts" / "a.json.done").unlink()  # killed between writing the data and the marker
    (tmp_path / "parts" / "a.json").write_text("{ truncated")
    counter.calls.clear()
    store.save({"a": counter.work("a", 1)})
    assert counter.calls == ["a"] and store.load()["a"]()["value"] == 1


def test_partitions_missing_from_the_new_run_are_removed(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({k: counter.work(k, 1) for k in ("a", "b", "c")})
    store.save({k: counter.work(k, 1) for k in ("a", "c")})
    assert sorted(store.load()) == ["a", "c"]
    assert not (tmp_path / "parts" / "b.json").exists()


def test_plain_values_and_empty_store(tmp_path: Path):
    store = dataset(tmp_path / "parts")
    assert not store.exists()
    with pytest.raises(Exception, match="No finished partitions"):
        store.load()
    store.save({"x": {"plain": True}})
    assert store.load()["x"]() == {"plain": True}
