"""Finished work is safe: a run with other episodes deletes nothing, bad settings stop a run
before any work, and two runs at once never leave a corrupt partition (reproductions of the
findings of the "No lost work, no stale results" issue, driven through `kedro run`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tint_distill.datasets import ImageSetDataset

from tests.conftest import PROJECT_ROOT, copy_project, kedro

SPECIALISATIONS = Path("data/06_models/class_specialisations")
SYNTHETIC = Path("data/05_model_input/synthetic_images")
TEST_MODELS = Path("data/06_models/test")  # the test environment's own generator and base student


@pytest.fixture
def project(kedro_project: Path) -> Path:
    """A project copy with the shipped generator where the test environment reads its own (the test
    settings run TINT on it in seconds)."""
    shutil.copytree(PROJECT_ROOT / "data" / "06_models" / "generator", kedro_project / TEST_MODELS / "generator")
    return kedro_project


def files_under(folder: Path) -> dict[str, int]:
    """Every file (but the run locks) with its modification time."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"}


def tint(project: Path, *params: str, check: bool = True) -> subprocess.CompletedProcess:
    args = ["run", "--env", "test", "--pipelines", "tint"] + (["--params", ",".join(params)] if params else [])
    return kedro(project, *args, check=check)


@pytest.mark.slow
def test_other_runs_keep_finished_work_and_bad_settings_stop_before_any_work(project: Path):
    tint(project)
    finished = files_under(project / "data")
    n_specialisations = len(list((project / SPECIALISATIONS).rglob("*.done")))

    # Finding 1: another seed and fewer episodes used to delete every partition they did not produce.
    other = tint(project, "data_episodes.sampling.seed=8", "data_episodes.sampling.n_episodes=2")
    assert "saved partition" in other.stdout + other.stderr
    after_other = files_under(project / "data")
    stores = ("05_model_input/synthetic_images/", "06_models/class_specialisations/")  # the resumable work
    kept = {p: t for p, t in finished.items() if p.startswith(stores)}
    missing = sorted(p for p in kept if p not in after_other)
    assert not missing, f"finished work was removed: {missing[:5]}"
    changed = sorted(p for p in kept if after_other[p] != kept[p] and not p.endswith("_current.json"))
    assert not changed, f"finished work was overwritten: {changed[:5]}"

    back = tint(project)
    log = back.stdout + back.stderr
    assert "saved partition" not in log, "going back recomputes nothing"
    assert f"{n_specialisations} of {n_specialisations} partitions were already done and reused" in log

    # Old versions stay until the user prunes them explicitly; a dry run (the default) removes nothing.
    before_prune = files_under(project / "data")
    listed = kedro(project, "prune", "--env", "test")
    assert "class_specialisations: keeps " in listed.stdout and "would remove" in listed.stdout, listed.stdout
    assert files_under(project / "data") == before_prune
    kedro(project, "prune", "--env", "test", "--yes")
    assert len(list((project / SPECIALISATIONS).rglob("*.done"))) == n_specialisations, "only the last run's are left"
    assert "Would remove 0 B" in kedro(project, "prune", "--env", "test").stdout

    # Finding 5: bad settings used to regenerate and delete work first, then fail without naming the parameter.
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs_before = len(mlflow.search_runs(experiment_names=["tint_distill"]))
    before = files_under(project / "data")
    for params, message in (
        (["synthesis.alpha=2"], "parameter 'synthesis.alpha' must be in [0, 1]"),
        (["synthesys.alpha=0.3"], "parameter block 'synthesys' is not read by any pipeline"),
    ):
        result = tint(project, *params, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and message in output, output[-2000:]
        assert "Running node" not in output, "no stage may start"
    assert files_under(project / "data") == before, "nothing was written or removed"
    assert len(mlflow.search_runs(experiment_names=["tint_distill"])) == runs_before, "no MLflow run was opened"

    # Finding 5: a missing or hub-id model folder is reported before the first stage (not after data_episodes).
    result = kedro(project, "run", "--env", "gpu", "--pipelines", "experiment", "--params",
                   "sd_model_path=runwayml/stable-diffusion-v1-5,inversion.device=cpu,synthesis.device=cpu,"
                   "teacher.device=cpu,distillation.device=cpu", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Running node" not in output
    assert "'runwayml/stable-diffusion-v1-5' is not a local folder; it looks like a Hugging Face Hub id" in output


@pytest.mark.slow
def test_two_runs_at_once_one_is_refused_and_no_partition_is_corrupt(project: Path):
    """Finding 4: one run crashed, the other finished, and a partition was left half written under
    a valid marker; a fresh project could also crash while both runs created mlflow.db."""
    env = {**os.environ, "COLUMNS": "400"}
    command = [sys.executable, "-m", "kedro", "run", "--env", "test", "--pipelines", "tint"]
    runs = [subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes[0] == 0 and codes[1] != 0, [o[-1500:] for o in outputs]
    refused = outputs[[run.returncode for run in runs].index(codes[1])]
    assert "another `kedro run` is using this project's outputs" in refused, refused[-2000:]
    assert not any("AttributeError" in o or "Directory not empty" in o for o in outputs)

    for sampler in ("tint", "textual_inversion"):
        versions = [p for p in (project / SYNTHETIC / sampler).rglob("*") if p.is_dir() and len(p.name) == 16]
        assert versions and all(v.with_name(v.name + ".done").is_file() for v in versions)
        assert all(len(ImageSetDataset(filepath=str(v)).load()) == 4 for v in versions), \
            "every finished partition is complete"
    assert not [p for p in (project / "data").rglob("*.tmp")], "no staging leftovers"
    again = tint(project)
    assert "saved partition" not in again.stdout + again.stderr, "the finished run's work is trusted and complete"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A git-committed project copy with the shipped generator and base student in their shipped
    place, after the whole default `kedro run --env test`, as the README shows it: the test
    environment trains its own models apart, then every stage does its work. Read only."""
    project = copy_project(tmp_path_factory.mktemp("full_run") / "project")
    models = project / "data" / "06_models"
    shutil.copytree(PROJECT_ROOT / "data" / "06_models" / "generator", models / "generator")
    shutil.copy(PROJECT_ROOT / "data" / "06_models" / "base_student.safetensors", models)
    shutil.copy(PROJECT_ROOT / ".gitignore", project)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "project copy with the shipped models"]):
        subprocess.run([*git, *command], cwd=project, check=True, capture_output=True)
    kedro(project, "run", "--env", "test")  # the whole default run
    return project


@pytest.mark.slow
@pytest.mark.xdist_group("full_run")  # the module's full_run fixture, built once
def test_the_run_view_times_the_work_of_each_node(full_run: Path):
    """Kedro-Viz's run view said the expensive nodes took 0.03 s: their work ran while their
    outputs were saved, after the node's clock had stopped."""
    events = json.loads((full_run / ".viz" / "kedro_pipeline_events.json").read_text())  # full runs only
    durations = {e["node"]: e["duration"] for e in events if e.get("event") == "after_node_run"}
    for node, output in (("inversion.specialise_classes", SPECIALISATIONS), ("synthesis.generate_synthetic_images", SYNTHETIC)):
        work = sum(json.loads(m.read_text())["seconds"] for m in (full_run / output).rglob("*.done"))
        assert durations[node] >= work > 0.5, (node, durations[node], work)


@pytest.mark.slow
@pytest.mark.xdist_group("full_run")  # the module's full_run fixture, built once
def test_test_and_benchmark_environments_leave_the_shipped_models_untouched(full_run: Path, tmp_path: Path,
                                                                           embedded_root: Path):
    """Finding 1: `kedro run --env test` (and the benchmarks, then environments) retrained the
    generator and the base student into the shipped files, and the replaced generator was deleted.
    A benchmark (`--params data_source=cifar_fs`) trains its own, in the default environment and
    under --env test, each apart."""
    from tests.data.test_sources import write_cifar_fs

    project = tmp_path / "project"
    shutil.copytree(full_run, project, symlinks=True)  # with its git history; the shared run stays as it was
    models = project / "data" / "06_models"
    pretraining = ["--pipelines", "generator_pretraining,student_pretraining"]
    write_cifar_fs(project / "data" / "01_raw" / "cifar_fs", embedded_root)
    for name in ("parameters_generator_pretraining.yml", "parameters_student_pretraining.yml"):  # tiny steps
        shutil.copy(project / "conf" / "test" / name, project / "conf" / "local" / name)
    kedro(project, "run", *pretraining, "--params", "data_source=cifar_fs")
    kedro(project, "run", "--env", "test", *pretraining, "--params", "data_source=cifar_fs")

    status = subprocess.run(["git", "status", "--porcelain", "--ignored", "data/06_models"], cwd=project,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert not [line for line in status if not line.startswith("!!")], f"shipped models changed: {status}"
    for folder in ("test", "cifar_fs", "test/cifar_fs"):  # each trained its own, apart
        assert (models / folder / "generator" / "training_record.json").is_file()
        assert (models / folder / "base_student.safetensors").is_file()
    classes = json.loads((models / "cifar_fs" / "generator" / "training_record.json").read_text())["history"]["classes"]
    assert classes == ["fish", "fruit"], "the benchmark's generator learnt its base classes"
