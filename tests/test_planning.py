"""The compute planner: unit costs from completion markers, and what a CI target costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.planning import cost_plan, unit_costs
from tint_distill.work import Stored, Work


def saved(tmp_path: Path, name: str, results: dict) -> dict:
    """``results`` computed as a stage's units and saved by the resumable dataset, then loaded back
    (with the markers' records)."""
    store = ResumablePartitionedDataset(path=str(tmp_path / name), dataset="json.JSONDataset", filename_suffix=".json")
    store.save(Work.of_functions({key: (f"fp-{key}", lambda value=value: value) for key, value in results.items()}))
    return store.load()


def test_unit_costs_come_from_what_the_markers_record(tmp_path: Path):
    students = saved(tmp_path, "students", {f"tint/episode_000{e}": {"accuracy": e / 10} for e in range(3)})
    teacher = saved(tmp_path, "teacher", {f"episode_000{e}": {"logits": [e]} for e in range(3)})
    costs = unit_costs({"student_results": students, "teacher_outputs": teacher})
    assert len(costs) == 6 and set(costs["stage"]) == {"students", "teacher"}
    assert sorted(costs.loc[costs["stage"] == "students", "episode"]) == [0, 1, 2]
    assert (costs["seconds"] >= 0).all() and set(costs["device"]) == {"cpu"} and costs["host"].notna().all()
    assert unit_costs({"student_results": {"tint/episode_0000": Stored("f", dict)}}).empty, "no record: no row"
    assert list(unit_costs({"teacher_outputs": teacher, "other": {"no_episode": Stored("f", dict, {"seconds": 1})}})
                ["partition"]) == [f"episode_000{e}" for e in range(3)], "a partition of no episode: no row"


def test_the_cost_plan_scales_measured_seconds_by_episodes_and_workers():
    import pandas as pd

    costs = pd.DataFrame([
        # 2 episodes: specialisation 30 s per class x 2 classes, students 6 s x 2 methods
        *({"stage": "specialisation", "partition": f"episode_000{e}/c{c}", "episode": e, "seconds": 30.0,
           "device": "cuda (H100)", "host": "a"} for e in range(2) for c in range(2)),
        *({"stage": "students", "partition": f"m{m}/episode_000{e}", "episode": e, "seconds": 6.0,
           "device": "cpu", "host": "a"} for e in range(2) for m in range(2)),
    ])
    plan = cost_plan(costs, [{"half_width": 0.01, "episodes": 360}, {"half_width": 0.05, "episodes": 15}], [1, 8],
                     "tint")
    assert plan["per_episode_s"] == {"specialisation": 60.0, "students": 12.0, "total": 72.0}
    first = plan["targets"][0]
    assert first["device_hours"] == pytest.approx(360 * 72 / 3600) == pytest.approx(7.2)
    assert first["wall_hours"] == {"1": pytest.approx(7.2), "8": pytest.approx(0.9)}
    assert first["text"] == "+/-1 pt: 360 episodes, 7.2 device-h, 0.9 h on 8 workers"
    assert plan["device_share"] == {"cpu": round(24 / 144, 4), "cuda (H100)": round(120 / 144, 4)}
    assert cost_plan(costs.iloc[:0], [{"half_width": 0.01, "episodes": 3}], [1], "tint")["targets"] == []
