"""The compute planner: what a target confidence interval costs in episodes, device-hours and
wall-hours, from the units of work this run measured.

Every saved unit's completion marker records the seconds it took and the device it ran on (its
share of its group's time for grouped work). Per episode, the cost of the whole evaluation is the
sum over stages of each stage's seconds divided by its number of episodes; E episodes (from the
variance analysis, :func:`tint_distill.distill.statistics.variance_decomposition`) then cost
E x that in device time, and E x that / G in wall time on G workers with the units spread evenly
(the units of an episode are independent, so this is the ideal the Ray engine approaches; a
one-off cost such as pre-training the generator is not included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from tint_distill.keys import PartitionKey

# The per-episode stages, by the catalog name of the partitions they save.
STAGES = {
    "class_specialisations": "specialisation",
    "synthetic_images": "synthesis",
    "teacher_outputs": "teacher",
    "student_results": "students",
}
COLUMNS = ["stage", "partition", "episode", "seconds", "device", "host"]


def unit_costs(partitions: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per finished unit of ``{catalog name: loaded partitions}``: stage, partition,
    episode, seconds, device, host (what its marker records)."""
    rows = []
    for name, loaded in partitions.items():
        for key, unit in sorted(loaded.items()):
            record = getattr(unit, "record", None) or {}
            if record.get("seconds") is None:
                continue
            try:
                episode = PartitionKey.parse(key).episode
            except ValueError:  # a partition of no episode (a candidate class's features)
                continue
            rows.append({"stage": STAGES.get(name, name), "partition": key, "episode": episode,
                         "seconds": float(record["seconds"]), "device": record.get("device") or "unknown",
                         "host": record.get("host")})
    return pd.DataFrame(rows, columns=COLUMNS)


def _points(half_width: float) -> str:
    return f"{100 * half_width:.1f}".rstrip("0").rstrip(".")


def cost_plan(costs: pd.DataFrame, episodes_needed: Sequence[Mapping], workers: Sequence[int], method: str) -> dict:
    """Episodes, device-hours and wall-hours on each number of ``workers`` for each target
    half-width of ``method``'s accuracy (``episodes_needed``: rows of ``half_width``, ``episodes``)."""
    if costs.empty:
        return {"method": method, "per_episode_s": {}, "targets": [],
                "note": "no unit of this run recorded its time (partitions saved before timings were recorded)"}
    per_stage = {stage: float(group["seconds"].sum() / group["episode"].nunique())
                 for stage, group in costs.groupby("stage", sort=False)}
    per_episode = sum(per_stage.values())
    share = costs.groupby("device")["seconds"].sum() / costs["seconds"].sum()
    targets = []
    for row in episodes_needed:
        episodes = int(row["episodes"])
        device_hours = episodes * per_episode / 3600
        wall = {str(g): device_hours / g for g in workers}
        busiest = max(workers)
        targets.append({
            "half_width": float(row["half_width"]), "episodes": episodes, "device_hours": device_hours,
            "wall_hours": wall,
            "text": f"+/-{_points(row['half_width'])} pt: {episodes} episodes, {_hours(device_hours)} device-h, "
                    f"{_hours(wall[str(busiest)])} h on {busiest} workers",
        })
    return {
        "method": method,
        "per_episode_s": {**{stage: round(s, 3) for stage, s in per_stage.items()}, "total": round(per_episode, 3)},
        "episodes_measured": int(costs["episode"].nunique()),
        "units_measured": int(len(costs)),
        "device_share": {device: round(float(s), 4) for device, s in share.items()},
        "workers": list(workers),
        "targets": targets,
        "note": "wall hours assume the units spread evenly over the workers; one-off costs (generator) excluded",
    }


def _hours(hours: float) -> str:
    """A readable number of hours: 19, 2.4, 0.031."""
    if hours >= 10:
        return f"{hours:.0f}"
    if hours >= 0.1:
        return f"{hours:.1f}"
    return f"{hours:.2g}" if hours > 0 else "0"


def target_name(half_width: float) -> str:
    """``1pt`` for 0.01: how metric names say a target."""
    return f"{_points(half_width)}pt"

