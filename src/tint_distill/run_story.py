"""What an experiment-tracking run says about itself: a name that tells runs apart, a
description with the headline results and charts, where its time went, the runs table's
headline view, and the code version. Plain Python, no Kedro."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


DEFAULT_DATA_SOURCE = "drawings"
FULL_RUN = "full run"  # what ``__default__`` is called in a run's name: the generator and the experiment
# The runs table's headline columns, in order (see :func:`runs_table_view`).
HEADLINE_METRICS = ("accuracy.tint", "diff.tint_vs_supports_only", "ci95.tint", "duration_s.total")
RUNS_TABLE_VIEW = "headline"  # the experiment's saved view of the runs table: ?viewStateShareKey=headline
_EPISODE_SETTINGS = {f"data_episodes.sampling.{name}" for name in ("n_way", "n_shot", "n_episodes")}
_VALUE_LENGTH = 24


def flat_overrides(overrides: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``--params`` as Kedro passes them (nested: ``{"student": {"init": "scratch"}}``) as dotted
    keys (``{"student.init": "scratch"}``), in the order given."""
    flat = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and value:
            flat |= flat_overrides(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def short_override(key: str, value: Any) -> str:
    """``student.init=scratch``; a deeper key keeps its last two parts (``sampling.n_queries=5``), a
    path its last folder (``task_path=my_task``), a list its items (``methods=[tint,supports_only]``),
    and a long value its first characters."""
    if isinstance(value, (list, tuple)):
        text = "[" + ",".join(map(str, value)) + "]"
    elif isinstance(value, str) and "/" in value.strip("/"):
        text = Path(value).name
    else:
        text = str(value)
    if len(text) > _VALUE_LENGTH:
        text = text[: _VALUE_LENGTH - 1] + "…"
    return f"{'.'.join(key.split('.')[-2:])}={text}"


def pipeline_label(pipelines: Sequence[str] | None) -> str:
    """``full run`` for the default pipeline, else the pipelines' names (``distillation+evaluation``)."""
    names = list(pipelines or ["__default__"])
    return FULL_RUN if names == ["__default__"] else "+".join(names)


def run_name(pipelines: Sequence[str] | None, env: str | None, params: Mapping[str, Any],
             reads: set[str], started: datetime, overrides: Mapping[str, Any] | None = None) -> str:
    """``full run · test · 3-way 2-shot · 3 episodes · student.init=scratch · 12-07 05:42``: what
    differs between runs first (the pipeline, a data source other than the drawings, the
    environment, the episodes when the run reads them, every ``--params`` override, shortened),
    the start time last, so that the runs table's name column tells runs apart."""
    parts = [pipeline_label(pipelines)]
    data_source = params.get("data_source") or DEFAULT_DATA_SOURCE
    if data_source != DEFAULT_DATA_SOURCE:
        parts.append(data_source)
    parts.append(env or "local")
    sampling = (params.get("data_episodes") or {}).get("sampling") or {}
    shown = {"data_source"}
    if "data_episodes" in reads and sampling:
        parts.append(f"{sampling.get('n_way')}-way {sampling.get('n_shot')}-shot")
        parts.append(f"{sampling.get('n_episodes')} episodes")
        shown |= _EPISODE_SETTINGS
    parts += [short_override(key, value) for key, value in flat_overrides(overrides).items() if key not in shown]
    parts.append(started.strftime("%m-%d %H:%M"))
    return " · ".join(str(p) for p in parts)


def runs_table_view(metrics: Sequence[str] = HEADLINE_METRICS) -> dict[str, Any]:
    """The MLflow UI's state of the runs table (as its "Share" button saves it in the experiment
    tag ``mlflow.sharedViewState.<key>``): the run name wide enough to read, then ``metrics``
    as the first columns. The UI shows it at ``#/experiments/<id>/runs?viewStateShareKey=<key>``;
    without that key it opens on its default columns (no metric), which no server setting changes."""
    columns = [f"metrics.`{name}`" for name in metrics]
    return {
        "selectedColumns": [*columns, "attributes.`Models`", "attributes.`Dataset`"],
        "columnOrder": ["attributes.`Run Name`", *columns],
        "columnWidths": {"attributes.`Run Name`": 440, **{column: 150 for column in columns}},
    }


def runs_table_url(experiment_id: str, host: str = "") -> str:
    """The address of the runs table in its headline view (``host`` empty: relative to the UI's root)."""
    return f"{host}#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_TABLE_VIEW}&workflowType=machine_learning"


def artifact_image(run_id: str, path: str, title: str) -> str:
    """Markdown showing one of the run's image artifacts where MLflow renders the run's Description
    (the UI's own artifact address, relative to its root)."""
    return f"![{title}](get-artifact?path={quote(path, safe='')}&run_uuid={run_id})"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def run_description(summary: Mapping[str, Any]) -> str:
    """Markdown: accuracy per method with its 95% CI, and the paired differences."""
    methods = summary.get("methods", {})
    if not methods:
        return ""
    first = next(iter(methods.values()))
    lines = [
        f"{first['n_way']}-way, {first['n_episodes']} episodes, {first['n_queries_per_class']} queries per class "
        "(95% confidence intervals).",
        "",
        "| method | accuracy |",
        "| --- | --- |",
    ]
    for method, stats in sorted(methods.items(), key=lambda item: -item[1]["accuracy"]):
        lines.append(f"| {method} | {100 * stats['accuracy']:.1f}% ± {100 * stats['ci95']:.1f} |")
    comparisons = summary.get("comparisons", {})
    if comparisons:
        lines += ["", "Paired differences (same episodes), points:", ""]
        for name, result in comparisons.items():
            low, high = result["ci95"]
            lines.append(f"- {name.replace('_vs_', ' − ')}: {_points(result['mean_diff'])} [{_points(low)}, {_points(high)}]")
    return "\n".join(lines)


def run_page(summary: Mapping[str, Any] | None, run_id: str, experiment_id: str,
             images: Sequence[tuple[str, str]]) -> str:
    """The run's Description (Markdown, the top of its page in the MLflow UI, shown folded to its
    first lines): the episodes' shape, the first of ``images`` (``(artifact path, title)``: the
    accuracy per method with its CI) inline, the accuracy table and paired differences, the other
    images (the time per node on one scale), and a link to the runs table's headline view."""
    intro, _, tables = run_description(summary).partition("\n\n") if summary else ("", "", "")
    charts = [artifact_image(run_id, path, title) for path, title in images]
    parts = [intro, *charts[:1], tables, *charts[1:], f"[All runs, headline metrics first]({runs_table_url(experiment_id)})"]
    return "\n\n".join(part for part in parts if part)


def duration_table(started: Mapping[str, float], finished: Mapping[str, float],
                   unit_seconds: Mapping[str, tuple[float, float]]) -> pd.DataFrame:
    """One row per node that finished, in the order they started: ``node`` (``<stage>.<node>``),
    wall ``seconds`` (its outputs' saving included) and ``unit_seconds`` (its units' own
    computation, from the unit clock's readings at its start and end)."""
    import pandas as pd

    def units(name: str) -> float:
        begin, end = unit_seconds.get(name, (0.0, 0.0))
        return max(0.0, end - begin)

    rows = [(name, finished[name] - start, units(name))
            for name, start in sorted(started.items(), key=lambda item: item[1]) if name in finished]
    return pd.DataFrame(rows, columns=["node", "seconds", "unit_seconds"])


def plot_durations(table: pd.DataFrame, total: float) -> Figure:
    """Every node's wall time as one bar on one scale (seconds), the units' own computation within
    it darker, each labelled with its seconds: where the run's time went, at a glance."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 0.6 + 0.28 * len(table)), layout="constrained")
    axis = figure.subplots()
    positions = range(len(table))
    axis.barh(positions, table["seconds"], color="#9ecae1", label="node (wall)")
    axis.barh(positions, table["unit_seconds"], color="#3182bd", label="its units' computation")
    for position, seconds in zip(positions, table["seconds"]):
        axis.annotate(f" {seconds:.2f} s" if seconds < 10 else f" {seconds:.0f} s", (seconds, position),
                      va="center", fontsize=7)
    axis.set_yticks(list(positions), table["node"], fontsize=7)
    axis.invert_yaxis()  # first node on top
    axis.set_xlim(0, 1.12 * max(table["seconds"].max(), 1e-9))
    axis.set_xlabel("seconds")
    axis.set_title(f"Time per node (run total {total:.0f} s)", fontsize=10)
    axis.legend(loc="lower right", fontsize=7)
    axis.grid(axis="x", alpha=0.3)
    return figure


def git_state(folder: str | Path) -> dict[str, str]:
    """``{"commit": sha, "dirty": "true"|"false"}`` of the git checkout holding ``folder``; empty
    when it is not one (a packaged install, say)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": str(dirty).lower()}
