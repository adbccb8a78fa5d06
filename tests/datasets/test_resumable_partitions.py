import json
import time
from pathlib import Path

import pytest
from kedro.io import DatasetError

from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.work import Deferred, UnitFailed, WorkPool


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


def version_dir(root: Path, key: str) -> Path:
    return next(p for p in (root / key).iterdir() if p.is_dir() and not p.name.startswith("."))


def test_half_written_partition_without_marker_is_redone(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({"a": counter.work("a", 1)})
    folder = version_dir(tmp_path / "parts", "a")
    folder.with_name(folder.name + ".done").unlink()  # killed between writing the data and the marker
    (folder / "a.json").write_text("{ truncated")
    counter.calls.clear()
    store.save({"a": counter.work("a", 1)})
    assert counter.calls == ["a"] and store.load()["a"]()["value"] == 1


def test_a_run_with_other_partitions_deletes_nothing_and_going_back_reuses_all(tmp_path: Path):
    """Finding 1: a smaller run (other episodes, env, seed) used to delete every partition it did not produce."""
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({k: counter.work(k, 1) for k in ("a", "b", "c")})
    counter.calls.clear()
    store.save({k: counter.work(k, 1) for k in ("a", "c")})
    assert counter.calls == [], "a and c are reused"
    assert sorted(store.load()) == ["a", "c"], "load gives the last run's partitions only"
    assert (tmp_path / "parts" / "b").is_dir(), "b's finished work is kept on disk"
    store.save({k: counter.work(k, 1) for k in ("a", "b", "c")})
    assert counter.calls == [], "going back recomputes nothing"
    assert sorted(store.load()) == ["a", "b", "c"]


def test_other_settings_add_a_version_and_keep_the_old_one(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({"a": counter.work("a", 1)})
    store.save({"a": counter.work("a", 2)})
    assert store.load()["a"]()["value"] == 2
    store.save({"a": counter.work("a", 1)})
    assert counter.calls == ["a", "a"], "the first version was kept, so switching back reuses it"
    assert store.load()["a"]()["value"] == 1


def test_a_partition_that_fails_while_saving_leaves_nothing_that_looks_finished(tmp_path: Path):
    """Finding 4: a partition left with 2 of 4 images under a valid marker was trusted by every later run."""
    from PIL import Image

    store = ResumablePartitionedDataset(path=str(tmp_path / "images"), dataset="tint_distill.datasets.ImageSetDataset")
    good = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)]
    broken = good[:2] + ["not an image"] + good[3:]
    with pytest.raises(DatasetError):
        store.save({"episode_0000/fish": Deferred("v1", lambda: broken)})
    assert not list((tmp_path / "images").rglob("*.done"))
    assert not list((tmp_path / "images").rglob("*.png")), "the half-written images were staged and removed"
    with pytest.raises(DatasetError, match="No finished partitions"):
        store.load()
    store.save({"episode_0000/fish": Deferred("v1", lambda: good)})
    assert len(store.load()["episode_0000/fish"]()) == 4


def test_prune_removes_only_what_the_last_run_does_not_use(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({k: counter.work(k, 1) for k in ("a", "b")})
    store.save({"a": counter.work("a", 2)})
    (tmp_path / "parts" / "a" / ".leftover.tmp").mkdir()  # a staging folder of a killed run
    planned = store.prune(dry_run=True)
    names = sorted(Path(p).relative_to(tmp_path / "parts").as_posix() for p, _ in planned)
    assert names == ["a/.leftover.tmp", "a/a-1", "a/a-1.done", "b"]
    assert all(size >= 0 for _, size in planned) and (tmp_path / "parts" / "b").exists(), "a dry run removes nothing"
    store.prune(dry_run=False)
    assert not (tmp_path / "parts" / "b").exists() and not (tmp_path / "parts" / "a" / "a-1").exists()
    assert store.load()["a"]()["value"] == 2 and store.prune() == []


def test_prune_keeps_the_current_work_when_the_path_is_relative(tmp_path: Path, monkeypatch):
    """A catalog built without Kedro's path resolution gives relative paths; listing gives absolute ones."""
    monkeypatch.chdir(tmp_path)
    counter, store = Counter(), dataset(Path("parts"))
    store.save({k: counter.work(k, 1) for k in ("a", "b")})
    store.save({"a": counter.work("a", 1)})
    assert [Path(p).name for p, _ in store.prune(dry_run=False)] == ["b"]
    assert store.load()["a"]()["value"] == 1


def test_plain_values_and_empty_store(tmp_path: Path):
    store = dataset(tmp_path / "parts")
    assert not store.exists()
    with pytest.raises(Exception, match="No finished partitions"):
        store.load()
    store.save({"x": {"plain": True}})
    assert store.load()["x"]() == {"plain": True}
    store.save({})  # a run whose settings switch the stage off: nothing to make, and nothing missing
    assert store.load() == {}


def test_pooled_work_is_grouped_from_what_is_missing_and_a_failed_unit_costs_the_others_nothing(tmp_path: Path):
    """A resumed run groups exactly the missing units; a unit that fails on its own is reported
    after every other unit is saved."""
    groups = []

    def compute_group(members):
        groups.append(list(members))
        return [UnitFailed(f"{m} diverged") if m == "c" else {"member": m} for m in members]

    store = dataset(tmp_path / "parts")
    keys = {m: f"episode_0000/{m}" for m in "abcdefg"}
    first = WorkPool(compute_group, group_size=3)
    store.save({keys[m]: first.deferred(m, f"{m}-1") for m in "ab"})  # an earlier, smaller run
    assert groups == [["a", "b"]]

    groups.clear()
    pool = WorkPool(compute_group, group_size=3)
    with pytest.raises(DatasetError, match=r"1 of 5 partitions .* failed \(episode_0000/c\); all the others are saved"):
        store.save({keys[m]: pool.deferred(m, f"{m}-1") for m in "abcdefg"})
    assert groups == [["c", "d", "e"], ["f", "g"]], "only the missing units, in full groups"
    assert sorted(store.load()) == [keys[m] for m in "abdefg"]
    assert store.load()[keys["e"]]() == {"member": "e"}


def test_results_computed_with_a_group_are_saved_before_any_new_work_can_crash(tmp_path: Path):
    def compute_group(members):
        if members == ["b"]:
            raise RuntimeError("CUDA out of memory")
        time.sleep(0.2)
        return [{"member": m} for m in members]

    store = dataset(tmp_path / "parts")
    pool = WorkPool(compute_group, group_size=2, apart=lambda m: "fish" if m in "ab" else m)
    with pytest.raises(DatasetError, match="out of memory"):  # a crash, not one unit's failure
        store.save({f"episode_0000/{m}": pool.deferred(m, f"{m}-1") for m in "abc"})
    saved = sorted(p.parent.name for p in (tmp_path / "parts").rglob("*.done"))
    assert saved == ["a", "c"], "c was computed with a: it is saved before b is started"
    for member in "ac":  # each its share of the group's time (not all of it, and not nothing)
        record = json.loads(next((tmp_path / "parts" / "episode_0000" / member).glob("*.done")).read_text())
        assert 0.09 <= record["seconds"] < 0.2


def test_members_kept_apart_never_share_a_group():
    groups = []
    pool = WorkPool(lambda members: groups.append(members) or members, group_size=3, apart=lambda m: m[1])
    members = [(0, "fish"), (0, "fruit"), (1, "fish"), (1, "clock"), (2, "fish")]
    for member in members:
        pool.need(member)
    assert [pool.deferred(m, "fp")() for m in members] == members
    assert groups == [[(0, "fish"), (0, "fruit"), (1, "clock")], [(1, "fish")], [(2, "fish")]]


def test_a_pool_member_asked_for_alone_is_computed_with_nothing_else():
    pool = WorkPool(lambda members: [m.upper() for m in members], group_size=4)
    assert pool.deferred("x", "fp")() == "X"
    with pytest.raises(ValueError, match="group_size"):
        WorkPool(lambda members: members, group_size=0)


def image_store(path: Path) -> ResumablePartitionedDataset:
    return ResumablePartitionedDataset(path=str(path), dataset="tint_distill.datasets.ImageSetDataset")


def drawn_images(n: int, shade: int = 0) -> list:
    from PIL import Image

    return [Image.new("RGB", (8, 8), (i * 40, shade, 0)) for i in range(n)]


def test_a_finished_partition_missing_a_file_is_recomputed_never_used_short(tmp_path: Path, caplog):
    """Finding 2: a PNG deleted from a finished partition used to be reused, and the student trained
    on 15 of 16 images under the intact result's fingerprint."""
    calls = []

    def work():
        calls.append(1)
        return drawn_images(4)

    store = image_store(tmp_path / "images")
    store.save({"episode_0000/fish": Deferred("v1", work)})
    folder = version_dir(tmp_path / "images", "episode_0000/fish")
    (folder / "00002.png").unlink()
    with pytest.raises(DatasetError, match=r"episode_0000/fish \(missing: 00002.png\).*kedro run"):
        store.load()  # a stage reading it refuses, naming it and the fix

    store.save({"episode_0000/fish": Deferred("v1", work)})  # the stage that makes it, run again
    assert len(calls) == 2, "the damaged partition was recomputed"
    assert "episode_0000/fish (version v1) is damaged (missing: 00002.png): it is recomputed" in caplog.text
    assert len(store.load()["episode_0000/fish"]()) == 4

    with (folder / "00001.png").open("r+b") as handle:  # truncated by a full disk, say
        handle.truncate(10)
    with pytest.raises(DatasetError, match="of another size: 00001.png"):
        store.load()
    (folder / "00001.png").unlink()
    store.save({"episode_0000/fish": Deferred("v1", work)})
    (folder / ".DS_Store").write_bytes(b"a file browser was here")  # litter, never read: still intact
    assert len(store.load()["episode_0000/fish"]()) == 4
    (folder / "extra.png").write_bytes((folder / "00000.png").read_bytes())
    with pytest.raises(DatasetError, match="not recorded: extra.png"):
        store.load()


def test_verify_finds_changed_contents_and_repair_has_them_recomputed(tmp_path: Path):
    calls = []

    def work():
        calls.append(1)
        return drawn_images(3)

    store = image_store(tmp_path / "images")
    store.save({"a": Deferred("v1", work), "b": Deferred("v1", work)})
    assert store.verify() == {"checked": 2, "unrecorded": 0, "damaged": []}
    png = version_dir(tmp_path / "images", "a") / "00001.png"
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes: only a hash sees it
    png.write_bytes(bytes(data))
    store.save({"a": Deferred("v1", work), "b": Deferred("v1", work)})
    assert len(calls) == 2, "a run checks sizes only"
    assert store.verify()["damaged"] == [("a", "changed: 00001.png")]
    store.verify(repair=True)
    store.save({"a": Deferred("v1", work), "b": Deferred("v1", work)})
    assert len(calls) == 3 and store.verify()["damaged"] == [], "the repaired partition was recomputed, alone"


def test_markers_written_before_they_recorded_files_are_still_trusted(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save({"a": counter.work("a", 1)})
    marker = next((tmp_path / "parts" / "a").glob("*.done"))
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "files"}))
    store.save({"a": counter.work("a", 1)})
    assert counter.calls == ["a"] and store.load()["a"]()["value"] == 1
    assert store.verify() == {"checked": 1, "unrecorded": 1, "damaged": []}
    next((tmp_path / "parts" / "a").glob("*/a.json")).write_text("{ truncated")  # such a marker cannot see it...
    with pytest.raises(DatasetError, match=r"(?s)partition a .*cannot be read.*kedro verify --repair"):
        store.load()["a"]()
    assert store.verify(repair=True)["damaged"][0][0] == "a"  # ... but verify loads it, and --repair works
    store.save({"a": counter.work("a", 1)})
    assert counter.calls == ["a", "a"] and store.load()["a"]()["value"] == 1


def test_prune_after_an_aborted_run_keeps_the_last_complete_run(tmp_path: Path):
    """Finding 3: _current.json named the aborted run's partitions before any work, so prune kept
    only what that run finished and removed the complete run before it, in its own store and in
    the earlier stages' stores, which that run had finished."""
    counter = Counter()
    earlier, later = dataset(tmp_path / "earlier"), dataset(tmp_path / "parts")  # two stages of one pipeline
    keys = [f"c{i}" for i in range(4)]
    for store in (earlier, later):  # run A, complete (the hook calls complete_run after the last node)
        store.save({k: counter.work(k, 1) for k in keys})
    assert earlier.complete_run() and later.complete_run()
    earlier.save({k: counter.work(k, 2) for k in keys})  # run B, other settings: its first stage finishes,
    with pytest.raises(DatasetError, match="interrupted"):  # its later stage stops after one partition
        later.save({k: counter.work(k, 2, fail=(k == "c1")) for k in keys})
    assert sorted(later.load()) == ["c0"], "downstream reads the last run's finished work"
    assert earlier.load()["c3"]()["value"] == 2
    for store in (earlier, later):
        store.prune(dry_run=False)
    assert sorted(p.name for p in (tmp_path / "earlier").glob("*/*.done")) == sorted(
        [f"c{i}-1.done" for i in range(4)] + [f"c{i}-2.done" for i in range(4)]), "run A's work survives with B's"
    assert sorted(p.name for p in (tmp_path / "parts").glob("*/*.done")) == [
        "c0-1.done", "c0-2.done", "c1-1.done", "c2-1.done", "c3-1.done"]

    later.save({k: counter.work(k, 2) for k in keys})  # run B again, to the end: now the last complete run
    assert later.complete_run() and earlier.complete_run()
    assert not (tmp_path / "parts" / "_pending.json").exists()
    later.prune(dry_run=False)
    assert sorted(p.name for p in (tmp_path / "parts").glob("*/*.done")) == [f"c{i}-2.done" for i in range(4)]

    (tmp_path / "parts" / "_current.json").unlink()
    with pytest.raises(DatasetError, match="removes nothing"):
        store.prune(dry_run=False)
    assert len(list((tmp_path / "parts").glob("*/*.done"))) == 4
    (tmp_path / "parts" / "_current.json").write_text("{ half written")
    with pytest.raises(DatasetError, match=r"_current.json is unreadable.*no partition was removed"):
        store.prune(dry_run=False)
