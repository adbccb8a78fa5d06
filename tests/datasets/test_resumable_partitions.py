import json
import time
from pathlib import Path

import pytest
from kedro.io import DatasetError

from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.execution import LocalEngine
from tint_distill.fingerprints import fingerprint
from tint_distill.work import Call, Stored, Unit, UnitFailed, Work, Worker, plan_groups


class Counter:
    def __init__(self):
        self.calls = []

    def work(self, key: str, value: int, fail: bool = False) -> tuple[str, object]:
        """One unit's ``(fingerprint, function)`` for :meth:`Work.of_functions`."""
        def compute():
            if fail:
                raise RuntimeError(f"interrupted while computing {key}")
            self.calls.append(key)
            return {"key": key, "value": value}

        return f"{key}-{value}", compute


def units(functions: dict) -> Work:
    """``{key: (fingerprint, function)}`` as the work a node returns (computed here)."""
    return Work.of_functions(functions)


def dataset(path: Path) -> ResumablePartitionedDataset:
    return ResumablePartitionedDataset(path=str(path), dataset="json.JSONDataset", filename_suffix=".json")


def test_saves_lazily_skips_done_and_recomputes_changed(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    keys = ["episode_0000/fish", "episode_0000/fruit", "episode_0001/clock"]
    store.save(units({k: counter.work(k, 1) for k in keys}))
    assert counter.calls == keys
    loaded = store.load()
    assert sorted(loaded) == keys and loaded["episode_0001/clock"]() == {"key": "episode_0001/clock", "value": 1}
    assert loaded["episode_0000/fish"].fingerprint == "episode_0000/fish-1"

    counter.calls.clear()
    store.save(units({k: counter.work(k, 2 if k.endswith("fruit") else 1) for k in keys}))
    assert counter.calls == ["episode_0000/fruit"], "only the partition whose inputs changed is recomputed"
    assert store.load()["episode_0000/fruit"]()["value"] == 2


def test_interrupted_save_keeps_finished_partitions_and_resumes(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    keys = [f"episode_0000/c{i}" for i in range(4)]
    with pytest.raises(DatasetError, match="interrupted while computing episode_0000/c2"):
        store.save(units({k: counter.work(k, 1, fail=(k.endswith("c2"))) for k in keys}))
    assert sorted(store.load()) == keys[:2], "what was computed before the failure is kept"

    counter.calls.clear()
    store.save(units({k: counter.work(k, 1) for k in keys}))
    assert counter.calls == keys[2:], "the rerun computes only the unfinished partitions"


def version_dir(root: Path, key: str) -> Path:
    return next(p for p in (root / key).iterdir() if p.is_dir() and not p.name.startswith("."))


def test_half_written_partition_without_marker_is_redone(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save(units({"a": counter.work("a", 1)}))
    folder = version_dir(tmp_path / "parts", "a")
    folder.with_name(folder.name + ".done").unlink()  # killed between writing the data and the marker
    (folder / "a.json").write_text("{ truncated")
    counter.calls.clear()
    store.save(units({"a": counter.work("a", 1)}))
    assert counter.calls == ["a"] and store.load()["a"]()["value"] == 1


def test_a_run_with_other_partitions_deletes_nothing_and_going_back_reuses_all(tmp_path: Path):
    """Finding 1: a smaller run (other episodes, env, seed) used to delete every partition it did not produce."""
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save(units({k: counter.work(k, 1) for k in ("a", "b", "c")}))
    counter.calls.clear()
    store.save(units({k: counter.work(k, 1) for k in ("a", "c")}))
    assert counter.calls == [], "a and c are reused"
    assert sorted(store.load()) == ["a", "c"], "load gives the last run's partitions only"
    assert (tmp_path / "parts" / "b").is_dir(), "b's finished work is kept on disk"
    store.save(units({k: counter.work(k, 1) for k in ("a", "b", "c")}))
    assert counter.calls == [], "going back recomputes nothing"
    assert sorted(store.load()) == ["a", "b", "c"]


def test_other_settings_add_a_version_and_keep_the_old_one(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save(units({"a": counter.work("a", 1)}))
    store.save(units({"a": counter.work("a", 2)}))
    assert store.load()["a"]()["value"] == 2
    store.save(units({"a": counter.work("a", 1)}))
    assert counter.calls == ["a", "a"], "the first version was kept, so switching back reuses it"
    assert store.load()["a"]()["value"] == 1


def test_a_partition_that_fails_while_saving_leaves_nothing_that_looks_finished(tmp_path: Path):
    """Finding 4: a partition left with 2 of 4 images under a valid marker was trusted by every later run."""
    from PIL import Image

    store = ResumablePartitionedDataset(path=str(tmp_path / "images"), dataset="tint_distill.datasets.ImageSetDataset")
    good = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)]
    broken = good[:2] + ["not an image"] + good[3:]
    with pytest.raises(DatasetError):
        store.save(units({"episode_0000/fish": ("v1", lambda: broken)}))
    assert not list((tmp_path / "images").rglob("*.done"))
    written = [p.name for p in (tmp_path / "images").rglob("*") if p.is_file() and not p.name.startswith("_")]
    assert not written, "the half-written partition was staged and removed"
    with pytest.raises(DatasetError, match="No finished partitions"):
        store.load()
    store.save(units({"episode_0000/fish": ("v1", lambda: good)}))
    assert len(store.load()["episode_0000/fish"]()) == 4


def test_prune_removes_only_what_the_last_run_does_not_use(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save(units({k: counter.work(k, 1) for k in ("a", "b")}))
    store.save(units({"a": counter.work("a", 2)}))
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
    store.save(units({k: counter.work(k, 1) for k in ("a", "b")}))
    store.save(units({"a": counter.work("a", 1)}))
    assert [Path(p).name for p, _ in store.prune(dry_run=False)] == ["b"]
    assert store.load()["a"]()["value"] == 1


def test_plain_values_and_empty_store(tmp_path: Path):
    store = dataset(tmp_path / "parts")
    assert not store.exists()
    with pytest.raises(Exception, match="No finished partitions"):
        store.load()
    store.save({"x": {"plain": True}})
    assert store.load()["x"]() == {"plain": True}
    assert store.load()["x"].fingerprint == fingerprint({"plain": True}), "versioned by a hash of the value"
    store.save({"x": {"plain": False}})
    assert store.load()["x"]() == {"plain": False} and len(list((tmp_path / "parts" / "x").glob("*.done"))) == 2
    store.save({})  # a run whose settings switch the stage off: nothing to make, and nothing missing
    assert store.load() == {}


def grouped(compute_group, members: str, group_size: int, apart=None, version: int = 1) -> Work:
    """Work of one unit per member (key ``episode_0000/<member>``, task: the member), computed
    ``group_size`` at a time by ``compute_group(members) -> [result or its own failure]``."""
    units = [Unit(f"episode_0000/{m}", f"{m}-{version}", m) for m in members]
    return Work.of(units, lambda tasks: Call(_group, (compute_group, tasks)), LocalEngine(), group_size=group_size,
                   apart=apart)


def _group(worker: Worker, compute_group, members: list) -> list:
    return compute_group(members)


def test_pooled_work_is_grouped_from_what_is_missing_and_a_failed_unit_costs_the_others_nothing(tmp_path: Path):
    """A resumed run groups exactly the missing units; a unit that fails on its own is reported
    after every other unit is saved."""
    groups = []

    def compute_group(members):
        groups.append(list(members))
        return [UnitFailed(f"{m} diverged") if m == "c" else {"member": m} for m in members]

    store = dataset(tmp_path / "parts")
    keys = {m: f"episode_0000/{m}" for m in "abcdefg"}
    store.save(grouped(compute_group, "ab", group_size=3))  # an earlier, smaller run
    assert groups == [["a", "b"]]

    groups.clear()
    work = grouped(compute_group, "abcdefg", group_size=3)
    failed = r"1 of 5 partitions .* failed \(episode_0000/c\); all the others are saved"
    with pytest.raises(DatasetError, match=failed) as raised:
        store.save(work)
    assert isinstance(raised.value.__cause__, UnitFailed) and "c diverged" in str(raised.value.__cause__)
    assert groups == [["c", "d", "e"], ["f", "g"]], "only the missing units, in full groups"
    missing = [work.units[keys[m]] for m in "cdefg"]
    assert groups == [[u.task for u in g] for g in plan_groups(missing, 3)], "the groups plan_groups gives"
    assert sorted(store.load()) == [keys[m] for m in "abdefg"]
    assert store.load()[keys["e"]]() == {"member": "e"}

    groups.clear()
    store.save(grouped(lambda members: groups.append(list(members)) or [{"member": m} for m in members],
                       "abcdefg", group_size=3))
    assert groups == [["c"]], "the rerun computes the failed unit alone"
    assert sorted(store.load()) == [keys[m] for m in "abcdefg"]


def test_a_grouped_rerun_keeps_members_apart_in_the_groups_plan_groups_gives(tmp_path: Path):
    groups = []

    def compute_group(members):
        groups.append(list(members))
        return [{"member": m} for m in members]

    def kind(member: str) -> str:  # a, b and c are one class in three episodes: one token, never together
        return "fish" if member in "abc" else member

    store = dataset(tmp_path / "parts")
    store.save(grouped(compute_group, "ad", group_size=3, apart=kind))
    assert groups == [["a", "d"]]
    groups.clear()
    work = grouped(compute_group, "abcdefg", group_size=3, apart=kind)
    store.save(work)
    assert groups == [["b", "e", "f"], ["c", "g"]], "the missing units only; b and c apart"
    pending = [work.units[f"episode_0000/{m}"] for m in "bcefg"]
    assert groups == [[u.task for u in g] for g in plan_groups(pending, 3, lambda u: kind(u.task))]
    assert {k: v()["member"] for k, v in store.load().items()} == {f"episode_0000/{m}": m for m in "abcdefg"}


def test_results_computed_with_a_group_are_saved_before_any_new_work_can_crash(tmp_path: Path):
    def compute_group(members):
        if members == ["b"]:
            raise RuntimeError("CUDA out of memory")
        time.sleep(0.2)
        return [{"member": m} for m in members]

    store = dataset(tmp_path / "parts")
    with pytest.raises(DatasetError, match="out of memory"):  # a crash, not one unit's failure
        store.save(grouped(compute_group, "abc", group_size=2, apart=lambda m: "fish" if m in "ab" else m))
    saved = sorted(p.parent.name for p in (tmp_path / "parts").rglob("*.done"))
    assert saved == ["a", "c"], "c was computed with a: it is saved before b is started"
    for member in "ac":  # each its share of the group's time (not all of it, and not nothing)
        record = json.loads(next((tmp_path / "parts" / "episode_0000" / member).glob("*.done")).read_text())
        assert 0.09 <= record["seconds"] < 0.2
    assert json.loads((tmp_path / "parts" / "_pending.json").read_text()).get("saved_at") is None, "not complete"


def test_a_group_size_below_one_is_refused_before_any_work(tmp_path: Path):
    calls = []
    store = dataset(tmp_path / "parts")
    with pytest.raises(DatasetError, match="group_size must be >= 1, got 0"):
        store.save(grouped(lambda members: calls.append(members) or members, "ab", group_size=0))
    assert calls == [] and not list((tmp_path / "parts").rglob("*.done"))


def test_a_member_asked_for_alone_is_computed_with_nothing_else(tmp_path: Path):
    groups = []

    def compute_group(members):
        groups.append(list(members))
        return [{"member": m.upper()} for m in members]

    store = dataset(tmp_path / "parts")
    store.save(grouped(compute_group, "x", group_size=4))
    assert groups == [["x"]] and store.load()["episode_0000/x"]() == {"member": "X"}


def _diverges(worker: Worker, student: str) -> dict:
    """A student's training: ``b`` diverges (as train_student raises it)."""
    from tint_distill.errors import NonFiniteLossError

    if student == "b":
        raise NonFiniteLossError("student", 7, float("nan"), epoch=3, detail="kd=nan, ce=1.2")
    return {"student": student}


@pytest.mark.parametrize("returned", [False, True], ids=["raised", "returned"])
def test_a_diverging_student_fails_alone(tmp_path: Path, returned: bool):
    """A non-finite loss (NonFiniteLossError) fails its unit alone, raised by a one-task call or
    returned as a group member's result: the others are saved, the store names the failed one."""
    from tint_distill.errors import NonFiniteLossError

    keys = [f"{m}/episode_0000" for m in ("supports_only", "tint", "real_unlabeled")]
    if returned:
        def compute_group(students):
            return [NonFiniteLossError("student", 1, float("nan"), epoch=1) if s == "b" else {"student": s}
                    for s in students]

        units = [Unit(k, f"fp-{s}", s) for k, s in zip(keys, "abc")]
        work = Work.of(units, lambda tasks: Call(_group, (compute_group, tasks)), LocalEngine(), group_size=3)
    else:
        work = Work.of([Unit(k, f"fp-{s}", s) for k, s in zip(keys, "abc")],
                       lambda tasks: Call(_diverges, (tasks[0],), single=True), LocalEngine())
    store = dataset(tmp_path / "students")
    with pytest.raises(DatasetError, match=r"1 of 3 partitions .* failed \(tint/episode_0000\); all the others are "
                                           r"saved and a rerun reuses them") as raised:
        store.save(work)
    failure = raised.value.__cause__
    assert isinstance(failure, UnitFailed) and "tint/episode_0000" in str(failure)
    assert isinstance(failure.__cause__, NonFiniteLossError), "the divergence is the failure's cause"
    assert "student training: non-finite loss (nan) at epoch" in str(failure)
    assert sorted(store.load()) == ["real_unlabeled/episode_0000", "supports_only/episode_0000"]
    assert store.load()["real_unlabeled/episode_0000"]() == {"student": "c"}
    assert not store.complete_run(), "a stage with a failed unit is not a complete run"


def test_a_work_saved_inside_its_node_is_not_saved_again(tmp_path: Path):
    """The NodeClock hook saves a node's Work in the node's clock; Kedro's own save that follows is a no-op."""
    from kedro.io import DataCatalog
    from kedro.pipeline import Node

    from tint_distill.hooks import NodeClock

    counter = Counter()
    store = dataset(tmp_path / "parts")
    catalog = DataCatalog({"parts": store})
    work = units({k: counter.work(k, 1) for k in ("a", "b")})
    node = Node(lambda: work, None, "parts", name="plan")
    NodeClock().after_node_run(node=node, catalog=catalog, outputs={"parts": work, "elsewhere": work})
    assert counter.calls == ["a", "b"], "saved (and computed) at the end of the node"
    store.complete_run()
    (tmp_path / "parts" / "a").rename(tmp_path / "moved")  # a second save would have to compute a again
    catalog.save("parts", work)  # Kedro's own save of the output
    assert counter.calls == ["a", "b"] and not (tmp_path / "parts" / "_pending.json").exists(), "nothing happened"
    assert not (tmp_path / "parts" / "a").exists()
    (tmp_path / "moved").rename(tmp_path / "parts" / "a")
    assert sorted(store.load()) == ["a", "b"]


def test_loaded_partitions_carry_their_fingerprint_and_marker(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save(units({k: counter.work(k, 1) for k in ("a", "b")}))
    loaded = store.load()
    assert all(isinstance(v, Stored) for v in loaded.values())
    assert loaded["a"].fingerprint == "a-1" and loaded["a"]() == loaded["a"].load() == {"key": "a", "value": 1}
    record = loaded["b"].record
    assert record["key"] == "b" and record["fingerprint"] == "b-1" and record["device"] == "cpu"
    assert record["seconds"] >= 0 and record["host"] and record["pid"] and "b.json" in record["files"]


def image_store(path: Path) -> ResumablePartitionedDataset:
    return ResumablePartitionedDataset(path=str(path), dataset="tint_distill.datasets.ImageSetDataset")


def drawn_images(n: int, shade: int = 0) -> list:
    from PIL import Image

    return [Image.new("RGB", (8, 8), (i * 40, shade, 0)) for i in range(n)]


def test_a_finished_partition_missing_a_file_is_recomputed_never_used_short(tmp_path: Path, caplog):
    """Finding 2: a PNG deleted from a finished partition used to be reused, and the student trained
    on 15 of 16 images under the intact result's fingerprint. The same holds for a partition's shard."""
    calls = []

    def work():
        calls.append(1)
        return drawn_images(4)

    store = image_store(tmp_path / "images")
    store.save(units({"episode_0000/fish": ("v1", work)}))
    folder = version_dir(tmp_path / "images", "episode_0000/fish")
    (folder / "images.safetensors").unlink()
    with pytest.raises(DatasetError, match=r"episode_0000/fish \(missing: images.safetensors\).*kedro run"):
        store.load()  # a stage reading it refuses, naming it and the fix

    store.save(units({"episode_0000/fish": ("v1", work)}))  # the stage that makes it, run again
    assert len(calls) == 2, "the damaged partition was recomputed"
    assert "episode_0000/fish (version v1) is damaged (missing: images.safetensors): it is recomputed" in caplog.text
    assert len(store.load()["episode_0000/fish"]()) == 4

    with (folder / "images.safetensors").open("r+b") as handle:  # truncated by a full disk, say
        handle.truncate(100)
    with pytest.raises(DatasetError, match="of another size: images.safetensors"):
        store.load()
    (folder / "images.safetensors").unlink()
    store.save(units({"episode_0000/fish": ("v1", work)}))
    (folder / ".DS_Store").write_bytes(b"a file browser was here")  # litter, never read: still intact
    assert len(store.load()["episode_0000/fish"]()) == 4
    (folder / "extra.png").write_bytes((folder / "preview.png").read_bytes())
    with pytest.raises(DatasetError, match="not recorded: extra.png"):
        store.load()


def test_verify_finds_changed_contents_and_repair_has_them_recomputed(tmp_path: Path):
    calls = []

    def work():
        calls.append(1)
        return drawn_images(3)

    store = image_store(tmp_path / "images")
    store.save(units({"a": ("v1", work), "b": ("v2", work)}))
    assert store.verify() == {"checked": 2, "unrecorded": 0, "damaged": []}
    shard = version_dir(tmp_path / "images", "a") / "images.safetensors"
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF  # same size, other pixels: only a hash sees it
    shard.write_bytes(bytes(data))
    store.save(units({"a": ("v1", work), "b": ("v2", work)}))
    assert len(calls) == 2, "a run checks sizes only"
    assert store.verify()["damaged"] == [("a", "changed: images.safetensors")]
    store.verify(repair=True)
    store.save(units({"a": ("v1", work), "b": ("v2", work)}))
    assert len(calls) == 3 and store.verify()["damaged"] == [], "the repaired partition was recomputed, alone"


def test_markers_written_before_they_recorded_files_are_still_trusted(tmp_path: Path):
    counter, store = Counter(), dataset(tmp_path / "parts")
    store.save(units({"a": counter.work("a", 1)}))
    marker = next((tmp_path / "parts" / "a").glob("*.done"))
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "files"}))
    store.save(units({"a": counter.work("a", 1)}))
    assert counter.calls == ["a"] and store.load()["a"]()["value"] == 1
    assert store.verify() == {"checked": 1, "unrecorded": 1, "damaged": []}
    next((tmp_path / "parts" / "a").glob("*/a.json")).write_text("{ truncated")  # such a marker cannot see it...
    with pytest.raises(DatasetError, match=r"(?s)partition a .*cannot be read.*kedro verify --repair"):
        store.load()["a"]()
    assert store.verify(repair=True)["damaged"][0][0] == "a"  # ... but verify loads it, and --repair works
    store.save(units({"a": counter.work("a", 1)}))
    assert counter.calls == ["a", "a"] and store.load()["a"]()["value"] == 1


def test_prune_after_an_aborted_run_keeps_the_last_complete_run(tmp_path: Path):
    """Finding 3: _current.json named the aborted run's partitions before any work, so prune kept
    only what that run finished and removed the complete run before it, in its own store and in
    the earlier stages' stores, which that run had finished."""
    counter = Counter()
    earlier, later = dataset(tmp_path / "earlier"), dataset(tmp_path / "parts")  # two stages of one pipeline
    keys = [f"c{i}" for i in range(4)]
    for store in (earlier, later):  # run A, complete (the hook calls complete_run after the last node)
        store.save(units({k: counter.work(k, 1) for k in keys}))
    assert earlier.complete_run() and later.complete_run()
    earlier.save(units({k: counter.work(k, 2) for k in keys}))  # run B, other settings: its first stage finishes,
    with pytest.raises(DatasetError, match="interrupted"):  # its later stage stops after one partition
        later.save(units({k: counter.work(k, 2, fail=(k == "c1")) for k in keys}))
    assert sorted(later.load()) == ["c0"], "downstream reads the last run's finished work"
    assert earlier.load()["c3"]()["value"] == 2
    for store in (earlier, later):
        store.prune(dry_run=False)
    assert sorted(p.name for p in (tmp_path / "earlier").glob("*/*.done")) == sorted(
        [f"c{i}-1.done" for i in range(4)] + [f"c{i}-2.done" for i in range(4)]), "run A's work survives with B's"
    assert sorted(p.name for p in (tmp_path / "parts").glob("*/*.done")) == [
        "c0-1.done", "c0-2.done", "c1-1.done", "c2-1.done", "c3-1.done"]

    later.save(units({k: counter.work(k, 2) for k in keys}))  # run B again, to the end: now the last complete run
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


def test_preview_summarises_per_method_with_the_named_ones_first(tmp_path: Path):
    """Kedro-Viz's table of students: a row per method (episodes, mean accuracy, seconds), tint on
    top although it sorts last, the methods past nrows in one row, and a total; no empty filler row."""
    store = dataset(tmp_path / "students")
    accuracies = {"mined_real": [0.5, 0.7], "real_unlabeled": [0.4, 0.4], "supports_only": [0.3, 0.5],
                  "tint": [0.6, 0.9]}
    store.save(Work.of_functions({
        f"{method}/episode_{e:04d}": (f"{method}{e}", lambda a=a: {"accuracy": a, "history": [1.0, 0.5]})
        for method, values in accuracies.items() for e, a in enumerate(values)}))
    seconds = sum(json.loads(m.read_text())["seconds"] for m in (tmp_path / "students").rglob("*.done"))

    table = store.preview(by="method", first=["tint", "supports_only"], count="episodes",
                          mean_of={"accuracy": "accuracy"}, nrows=3)
    assert table["columns"] == ["method", "episodes", "accuracy", "seconds"]
    assert [row[:3] for row in table["data"]] == [
        ["tint", 2, 0.75], ["supports_only", 2, 0.4], ["mined_real", 2, 0.6], ["1 more", 2, 0.4], ["all", 8, ""]]
    assert table["data"][-1][3] == pytest.approx(seconds, abs=0.1)
    assert all(cell is not None for row in table["data"] for cell in row), "no null cells"

    per_partition = store.preview(count="students")
    assert per_partition["columns"] == ["partition", "seconds"]
    assert [row[0] for row in per_partition["data"]][:2] == ["mined_real/episode_0000", "mined_real/episode_0001"]
    assert per_partition["data"][-1][0] == "all (8 students)"


def test_partitions_with_the_same_fingerprint_are_computed_once_and_saved_under_each_key(tmp_path: Path):
    """A task's class keeps all its images in a k-fold split: its specialisation is the final episode's."""
    computed = []

    def specialise():
        computed.append(1)
        return {"tokens": [1.0, 2.0]}

    store = dataset(tmp_path / "parts")
    store.save(units({"episode_0000/fish": ("same-supports", specialise),
                      "episode_0002/fish": ("same-supports", specialise),
                      "episode_0001/fish": ("fewer-supports", lambda: {"tokens": [3.0]})}))
    assert len(computed) == 1, "one computation for the two partitions with the same fingerprint"
    loaded = store.load()
    assert sorted(loaded) == ["episode_0000/fish", "episode_0001/fish", "episode_0002/fish"]
    assert loaded["episode_0002/fish"]() == loaded["episode_0000/fish"]() == {"tokens": [1.0, 2.0]}
    assert loaded["episode_0002/fish"].fingerprint == "same-supports"
