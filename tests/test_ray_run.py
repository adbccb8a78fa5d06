"""`kedro run --params execution.engine=ray` on a local Ray cluster of 2 workers: the same outputs
as the local engine, every partition reused by a second run, and no Ray process left behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.test_execution import ray_processes
from tests.conftest import copy_pretrained, kedro

pytestmark = pytest.mark.xdist_group("ray")  # one Ray cluster at a time: the tests check for leftover Ray processes

STAGES = "inversion,synthesis,distillation"
PARTITIONED = ("06_models/class_specialisations", "05_model_input/synthetic_images",
               "07_model_output/teacher_outputs", "07_model_output/student_results",
               "04_feature/candidate_image_features")


def comparable(value):
    """A JSON value without what two runs of the same work may not share: the seconds it took and
    the folder of the project it ran in."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in ("seconds", "model_path")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def contents(file: Path):
    """JSON as values (less timings and the project's folder); any other file (safetensors, PNG)
    as bytes: the same work in another project folder, on another engine with the same thread
    count, writes the same bytes (the README's "What two runs share, exactly")."""
    if file.suffix == ".json":
        return comparable(json.loads(file.read_text()))
    return file.read_bytes()


def finished_outputs(project: Path) -> dict[str, object]:
    """Every file of every finished partition version, by path (see :func:`contents`)."""
    outputs = {}
    for folder in PARTITIONED:
        root = project / "data" / folder
        for marker in root.rglob("*.done"):
            version = marker.with_suffix("")
            files = [version] if version.is_file() else sorted(p for p in version.rglob("*") if p.is_file())
            for file in files:
                relative = file.relative_to(project / "data").as_posix()
                outputs[relative] = contents(file)
    return outputs


@pytest.mark.slow
def test_ray_and_local_engines_give_the_same_outputs_and_resume(pretrained_project: Path, tmp_path: Path,
                                                               monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per unit, as each Ray worker (cpus_per_unit: 1)
    local = copy_pretrained(pretrained_project, tmp_path / "local")  # the same generator, student and episodes
    on_ray = copy_pretrained(pretrained_project, tmp_path / "on_ray")

    kedro(local, "run", "--env", "test", "--pipelines", STAGES, "--params", "execution.engine=local")
    first = kedro(on_ray, "run", "--env", "test", "--pipelines", STAGES,
                  "--params", "execution.engine=ray,execution.max_workers=2")
    log = first.stdout + first.stderr
    assert "on 2 workers" in log, log[-3000:]

    here, remote = finished_outputs(local), finished_outputs(on_ray)
    assert any(path.endswith(".safetensors") for path in here) and any(path.endswith(".png") for path in here)
    assert sorted(remote) == sorted(here), "the same partitions and files"
    different = [path for path in here if remote[path] != here[path]]
    assert not different, f"outputs differ between the engines: {different[:5]}"
    markers = [json.loads(p.read_text()) for p in (on_ray / "data" / PARTITIONED[3]).rglob("*.done")]
    assert markers and all(m["device"] == "cpu" and m["pid"] != os.getpid() for m in markers)

    again = kedro(on_ray, "run", "--env", "test", "--pipelines", STAGES, "--params", "execution.engine=ray")
    output = again.stdout + again.stderr
    assert "saved partition" not in output, "a second run reuses every partition"
    assert output.count("already done and reused") == len(PARTITIONED)

    deadline = time.time() + 20
    while ray_processes() and time.time() < deadline:
        time.sleep(0.2)
    assert not ray_processes(), "the run stopped the Ray cluster it started"
