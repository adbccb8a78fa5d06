"""What an experiment-tracking run says about itself: a name that tells runs apart, a
description with the headline results, and the code version. Plain Python, no Kedro."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any


def run_name(pipelines: Sequence[str] | None, env: str | None, params: Mapping[str, Any],
             reads: set[str], started: datetime) -> str:
    """``experiment · mini_imagenet · test · 3-way 2-shot · 3 episodes · alpha 0.5 · 11-22 05:42``: what
    ran, on which data source, with which settings. Episode and synthesis settings appear only when
    the run reads them."""
    parts = ["+".join(pipelines or ["__default__"]), params.get("data_source") or "drawings", env or "local"]
    sampling = (params.get("data_episodes") or {}).get("sampling") or {}
    if "data_episodes" in reads and sampling:
        parts.append(f"{sampling.get('n_way')}-way {sampling.get('n_shot')}-shot")
        parts.append(f"{sampling.get('n_episodes')} episodes")
    synthesis = params.get("synthesis") or {}
    if "synthesis" in reads and "alpha" in synthesis:
        parts.append(f"alpha {synthesis['alpha']}")
    parts.append(started.strftime("%m-%d %H:%M"))
    return " · ".join(str(p) for p in parts)


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
