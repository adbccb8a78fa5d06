"""The whole `kedro run` on the test environment: interrupted and resumed TINT stages, then
distillation and evaluation producing the summary with every method.

One module-scoped run (:func:`run`) does the work once, from the session's pretrained project;
each test checks one thing it produced."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import nbformat
from nbclient import NotebookClient
import pandas as pd
import pytest

from tint_distill.datasets import ImageSetDataset

from tests.conftest import PROJECT_ROOT, copy_pretrained, kedro

# One worker runs them all: the module's `run` fixture (a few minutes of kedro runs) is then built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("end_to_end")]

T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (3 episodes): from tables
METHODS = {"supports_only", "textual_inversion", "tint", "real_unlabeled", "mined_real", "teacher"}


def markers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.done")) if folder.exists() else []


@dataclass
class Run:
    project: Path
    head: str  # the project's git commit
    n_classes: int  # (episode, class) pairs
    finished_at_kill: int  # specialisations done when the inversion was killed
    resumed_log: str  # `--pipelines inversion,synthesis` after the kill
    again_log: str  # `--pipelines tint` once more, nothing changed
    tint_run: pd.Series  # the MLflow run of that last tint run
    episodes: pd.DataFrame
    mlflow_server: str  # the address of an `mlflow server` on the project's store, started during the runs

    @property
    def reporting(self) -> Path:
        return self.project / "data" / "08_reporting"

    @property
    def summary(self) -> dict:
        return json.loads((self.reporting / "evaluation_summary.json").read_text())

    @property
    def per_episode(self) -> pd.DataFrame:
        return pd.read_csv(self.reporting / "episode_accuracies.csv")


def latest_run() -> pd.Series:
    return mlflow.search_runs(experiment_names=["tint_distill"], order_by=["start_time DESC"]).iloc[0]


def start_mlflow_server(project: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on the project's SQLite store, at a free local port (it answers once up)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{project / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=project, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return process, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def run(pretrained_project: Path, tmp_path_factory) -> Run:
    """In a git-committed copy of the pretrained project: the inversion killed mid-run, resumed
    with synthesis, the tint pipeline once more, then distillation and evaluation with an override
    (``speed.threads=1``); an ``mlflow server`` on its store starts while they run."""
    project = copy_pretrained(pretrained_project, tmp_path_factory.mktemp("end_to_end") / "project")
    (project / ".gitignore").write_text("data/\nmlflow.db\nmlruns/\n")  # outputs do not make it dirty
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "project copy"]):
        subprocess.run([*git, *command], cwd=project, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    episodes = pd.read_csv(project / "data" / "03_primary" / "episodes.csv")
    n_classes = len(episodes[["episode", "label"]].drop_duplicates())

    specialisations = project / "data" / "06_models" / "class_specialisations"
    env = {**os.environ, "COLUMNS": "400"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--env", "test", "--pipelines", "inversion"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 300
    while len(markers(specialisations)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(markers(specialisations))

    resumed = kedro(project, "run", "--env", "test", "--pipelines", "inversion,synthesis")
    server, address = start_mlflow_server(project)  # the store exists now; the server starts while the runs go on
    try:
        again = kedro(project, "run", "--env", "test", "--pipelines", "tint")
        mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
        tint_run = latest_run()
        kedro(project, "run", "--env", "test", "--pipelines", "distillation,evaluation", "--params", "speed.threads=1")
        yield Run(project, head, n_classes, finished, resumed.stdout + resumed.stderr, again.stdout + again.stderr,
                  tint_run, episodes, address)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture
def tracking(run: Run) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{run.project / 'mlflow.db'}")
    return mlflow.MlflowClient()


@pytest.fixture
def evaluation_run(run: Run, tracking) -> pd.Series:
    """The MLflow run of `--pipelines distillation,evaluation` (the last one)."""
    return latest_run()


def test_a_killed_inversion_resumes_only_its_unfinished_classes(run: Run):
    assert 2 <= run.finished_at_kill < run.n_classes, f"the kill should land mid-run ({run.finished_at_kill} of {run.n_classes} done)"
    recomputed = sum("class_specialisations: saved partition" in line for line in run.resumed_log.splitlines())
    assert recomputed == run.n_classes - run.finished_at_kill, "only unfinished classes are recomputed"
    specialisations = run.project / "data" / "06_models" / "class_specialisations"
    assert len(markers(specialisations)) == run.n_classes
    sidecars = [p for p in specialisations.rglob("*.json") if not p.name.startswith("_")]  # not _current.json
    assert len(list(specialisations.rglob("*.safetensors"))) == len(sidecars) == run.n_classes


def test_synthesis_writes_the_images_of_every_episode_class_and_a_preview(run: Run):
    synthetic = run.project / "data" / "05_model_input" / "synthetic_images"
    for sampler in ("tint", "textual_inversion"):
        folders = [p.parent / p.name[: -len(".done")] for p in markers(synthetic / sampler)]
        assert all((folder / "images.safetensors").is_file() and (folder / "preview.png").is_file() for folder in folders)
        counts = [len(ImageSetDataset(filepath=str(folder)).load()) for folder in folders]
        assert counts == [4] * run.n_classes, f"images_per_class {sampler} images for every (episode, class)"
    assert (run.reporting / "synthesis_previews" / "episode_0000.png").is_file()
    assert not (run.reporting / "synthesis_preview.png").exists(), "no second copy of the first episode's preview"


def test_a_second_tint_run_recomputes_nothing_and_logs_its_previews(run: Run, tracking):
    assert "saved partition" not in run.again_log, "nothing changed, so nothing is recomputed"
    assert run.again_log.count("already done and reused") == 2
    paths = {a.path for a in tracking.list_artifacts(run.tint_run["run_id"])}
    assert "synthesis_previews" in paths and "synthesis_preview" not in paths
    assert run.tint_run["params.inversion.null_text.guidance_scale"] == "7.5"


def student_result(project: Path, method: str, episode: int) -> dict:
    """The saved result (JSON) of one (method, episode) student."""
    key = f"episode_{episode:04d}"
    (marker,) = markers(project / "data" / "07_model_output" / "student_results" / method / key)
    return json.loads((marker.with_suffix("") / f"{key}.json").read_text())


def test_saved_predictions_give_the_accuracies_of_the_table_and_the_summary(run: Run):
    """Each student's accuracy, recomputed from its saved query predictions and the episodes' query
    labels, is the table's; each method's accuracy and CI follow from the table (t-interval)."""
    per_episode, summary = run.per_episode, run.summary
    assert set(summary["methods"]) == METHODS and len(per_episode) == 6 * 3
    queries = run.episodes[run.episodes["role"] == "query"]
    for method in METHODS - {"teacher"}:
        for episode in range(3):
            predictions = student_result(run.project, method, episode)["query_predictions"]
            labels = queries.loc[queries["episode"] == episode, "label"].tolist()
            assert len(predictions) == len(labels) == 3 * 4
            recomputed = sum(p == y for p, y in zip(predictions, labels)) / len(labels)
            row = per_episode[(per_episode["method"] == method) & (per_episode["episode"] == episode)]
            assert row["accuracy"].item() == pytest.approx(recomputed), (method, episode)
    for method, stats in summary["methods"].items():
        accuracies = per_episode.loc[per_episode["method"] == method, "accuracy"]
        assert stats["accuracy"] == pytest.approx(accuracies.mean())
        assert stats["ci95"] == pytest.approx(T_975_DF2 * accuracies.std(ddof=1) / math.sqrt(3))
        assert stats["n_episodes"] == 3 and stats["n_queries_per_class"] == 4


def test_the_paired_difference_and_its_interval_follow_from_the_per_episode_accuracies(run: Run, evaluation_run):
    table = run.per_episode.pivot(index="episode", columns="method", values="accuracy")
    differences = table["tint"] - table["supports_only"]
    mean, half_width = differences.mean(), T_975_DF2 * differences.std(ddof=1) / math.sqrt(3)
    comparison = run.summary["comparisons"]["tint_vs_supports_only"]
    assert comparison["mean_diff"] == pytest.approx(mean)
    assert comparison["ci95"] == pytest.approx([mean - half_width, mean + half_width])
    assert comparison["n_episodes"] == 3
    logged = (evaluation_run["metrics.diff_low.tint_vs_supports_only"], evaluation_run["metrics.diff_high.tint_vs_supports_only"])
    assert logged == pytest.approx((mean - half_width, mean + half_width))


def test_the_summary_holds_teacher_agreement_inversion_mining_planner_and_speed(run: Run):
    summary = run.summary
    for method in ("textual_inversion", "tint", "real_unlabeled", "mined_real"):
        saved = [student_result(run.project, method, e)["teacher_agreement_on_unlabeled"] for e in range(3)]
        assert summary["methods"][method]["teacher_agreement_on_unlabeled"] == pytest.approx(sum(saved) / 3)
    inversion = summary["inversion"]  # the supports rebuilt from their inversion, against the VAE bound
    assert inversion["classes"] == run.n_classes and inversion["mse_mean"] > 0 and inversion["vae_mse_mean"] > 0
    assert inversion["ratio_of_means"] == pytest.approx(inversion["mse_mean"] / inversion["vae_mse_mean"])
    mined = pd.read_csv(run.project / "data" / "05_model_input" / "mined_real_images.csv")
    assert len(mined) == 3 * 3 * 4 and set(mined["source_class"]).isdisjoint(set(run.episodes["class_name"]))
    assert {"tint", "supports_only", "teacher"} <= set(summary["planner"])
    assert summary["speed"]["student"]["parameters"] < summary["speed"]["teacher"]["parameters"]
    assert (run.reporting / "accuracy_per_method.png").is_file() and (run.reporting / "accuracy_vs_speed.png").is_file()


def test_the_cost_plan_follows_from_the_unit_costs_and_the_planner(run: Run):
    summary, n_classes = run.summary, run.n_classes
    costs = pd.read_csv(run.reporting / "unit_costs.csv")
    assert set(costs["stage"]) == {"specialisation", "synthesis", "teacher", "students"}
    assert len(costs) == n_classes + 2 * n_classes + 3 + 5 * 3 and (costs["seconds"] > 0).all()
    plan = summary["cost_plan"]
    assert plan["method"] == "tint" and plan["per_episode_s"]["total"] == pytest.approx(costs["seconds"].sum() / 3, rel=1e-3)
    needed = {row["half_width"]: row["episodes"] for row in summary["planner"]["tint"]["episodes_needed"]}
    for target in plan["targets"]:
        assert target["episodes"] == needed[target["half_width"]]
        assert target["wall_hours"]["8"] == pytest.approx(target["device_hours"] / 8)
    assert (run.reporting / "cost_plan.png").is_file()


def test_mlflow_metrics_are_the_summarys(run: Run, evaluation_run, tracking):
    summary, plan = run.summary, run.summary["cost_plan"]
    for method, stats in summary["methods"].items():
        assert evaluation_run[f"metrics.accuracy.{method}"] == pytest.approx(stats["accuracy"]), method
    assert evaluation_run["metrics.plan.1pt.episodes"] == plan["targets"][0]["episodes"]
    assert evaluation_run["metrics.plan.1pt.wall_hours.8_workers"] == pytest.approx(plan["targets"][0]["wall_hours"]["8"])
    history = tracking.get_metric_history(evaluation_run["run_id"], "loss.tint.mean")
    assert [m.step for m in history] == [1, 2], "one loss value per epoch, the mean over the episodes"
    assert len(tracking.get_metric_history(evaluation_run["run_id"], "loss.tint.std")) == 2
    assert not tracking.get_metric_history(evaluation_run["run_id"], "loss.tint.episode_0000"), "per-episode curves only on request"


def test_the_mlflow_run_says_what_it_was(run: Run, evaluation_run, tracking):
    """Name, tags, description, input dataset, time per stage, artefacts."""
    assert evaluation_run["tags.mlflow.runName"].startswith("distillation+evaluation · test · 3-way 2-shot · 3 episodes · speed.threads=1 · "), evaluation_run["tags.mlflow.runName"]
    assert (evaluation_run["tags.env"], evaluation_run["tags.pipeline"], evaluation_run["tags.runner"]) == ("test", "distillation+evaluation", "SequentialRunner")
    assert evaluation_run["tags.git_commit"] == run.head and evaluation_run["tags.git_dirty"] == "false"
    note = evaluation_run["tags.mlflow.note.content"]
    assert "3-way, 3 episodes, 4 queries per class" in note and "| tint |" in note and "- tint − supports_only: " in note
    student_markers = (run.project / "data" / "07_model_output" / "student_results").rglob("*.done")
    trained = sum(json.loads(m.read_text())["seconds"] for m in student_markers)
    assert evaluation_run["metrics.duration_s.distillation.train_students"] >= trained > 0, "the training, done while saving, is counted"
    assert evaluation_run["metrics.duration_s.total"] >= evaluation_run["metrics.duration_s.distillation.train_students"]
    inputs = tracking.get_run(evaluation_run["run_id"]).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["episodes"]
    artifacts = {a.path for a in tracking.list_artifacts(evaluation_run["run_id"], "evaluation")}
    assert {"evaluation/speed.json", "evaluation/evaluation_summary.json"} <= artifacts
    experiment = tracking.get_experiment_by_name("tint_distill")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development", "the UI opens on the runs table"


def test_the_run_logs_its_median_tint_student_as_a_model(run: Run, evaluation_run, tracking):
    experiment = tracking.get_experiment_by_name("tint_distill")
    logged = [m for m in mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
              if m.source_run_id == evaluation_run["run_id"]]
    assert [m.name for m in logged] == ["student"], "the run's Models column shows its median tint student"
    per_episode = run.per_episode
    tint = per_episode[per_episode["method"] == "tint"].sort_values(["accuracy", "episode"])
    info = mlflow.models.get_model_info(logged[0].model_uri)
    assert info.metadata["episode"] == int(tint["episode"].iloc[1]), "the median of 3 episodes"
    assert info.signature.outputs.input_names() == ["logits", "probabilities"] and info.saved_input_example_info


def rest(address: str, path: str, body: dict | None = None, timeout: float = 180) -> dict:
    """One call of the MLflow REST API (POST with a JSON body, else GET), retried while the server starts."""
    request = urllib.request.Request(address + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError:
            raise  # the server answered: no retry
        except (ConnectionError, urllib.error.URLError):  # not listening yet
            if time.time() > deadline:
                raise
            time.sleep(1)


def test_the_mlflow_server_shows_the_override_the_models_own_metrics_and_the_registry(run: Run):
    """Through ``mlflow server``'s REST API, as the UI reads them: the run's name has its override,
    the logged student's metrics are its own (no run metric linked to it), it is registered, the
    runs table's headline view is saved, and the Description's charts are served."""
    experiment = rest(run.mlflow_server, "api/2.0/mlflow/experiments/get-by-name?experiment_name=tint_distill")["experiment"]
    runs = rest(run.mlflow_server, "api/2.0/mlflow/runs/search",
                {"experiment_ids": [experiment["experiment_id"]], "order_by": ["attributes.start_time DESC"]})["runs"]
    last = runs[0]
    tags = {t["key"]: t["value"] for t in last["data"]["tags"]}
    assert tags["mlflow.runName"].startswith("distillation+evaluation · test · 3-way 2-shot · 3 episodes · speed.threads=1 · ")

    models = rest(run.mlflow_server, "api/2.0/mlflow/logged-models/search",
                  {"experiment_ids": [experiment["experiment_id"]]})["models"]
    [student] = [m for m in models if m["info"]["source_run_id"] == last["info"]["run_id"]]
    own = {m["key"]: m["value"] for m in student["data"]["metrics"]}
    assert set(own) == {"student.accuracy", "student.accuracy_low", "student.accuracy_high", "student.n_queries"}
    per_episode = run.per_episode
    tint = per_episode[per_episode["method"] == "tint"].sort_values(["accuracy", "episode"]).iloc[1]  # the median of 3
    assert own["student.accuracy"] == pytest.approx(tint["accuracy"])
    assert own["student.accuracy_low"] <= own["student.accuracy"] <= own["student.accuracy_high"]
    params = {p["key"]: p["value"] for p in student["data"]["params"]}
    assert (params["method"], params["episode"]) == ("tint", str(int(tint["episode"])))
    model_tags = {t["key"]: t["value"] for t in student["info"]["tags"]}
    assert f"episode {int(tint['episode'])}" in model_tags["mlflow.note.content"]

    registered = rest(run.mlflow_server, "api/2.0/mlflow/registered-models/get?name=tint_distill_student")["registered_model"]
    assert registered["latest_versions"][0]["run_id"] == last["info"]["run_id"] and "queries" in registered["description"]

    experiment_tags = {t["key"]: t["value"] for t in experiment["tags"]}
    view = json.loads(experiment_tags["mlflow.sharedViewState.headline"])
    assert view["columnOrder"][1:3] == ["metrics.`accuracy.tint`", "metrics.`diff.tint_vs_supports_only`"]
    charts = re.findall(r"!\[[^]]*\]\((get-artifact\?[^)]+)\)", tags["mlflow.note.content"])
    assert len(charts) == 2, "accuracy per method and time per node, inline"
    for chart in charts:
        with urllib.request.urlopen(run.mlflow_server + chart, timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_notebook_shows_the_runs_images_and_summary(run: Run):
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "explore_run.ipynb", as_version=4)
    folder = run.project / "notebooks"
    folder.mkdir()
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    tables = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "text/html" in o.get("data", {})]
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the notebook shows the support grid and the synthetic images"
    assert any("tint" in t["data"]["text/html"] and "ci95" in t["data"]["text/html"] for t in tables)


def test_kedro_viz_previews_show_what_the_outputs_hold_and_the_time_it_took(run: Run):
    """Kedro-Viz, built with previews: the stages collapse, the outputs show what they hold and the time it took."""
    kedro(run.project, "viz", "build", "--include-previews")
    api = run.project / "build" / "api"
    assert (run.project / "build" / "index.html").is_file()
    main = json.loads((api / "main").read_text())
    assert {"data_episodes", "inversion", "synthesis", "distillation", "evaluation"} <= set(main["modular_pipelines"])
    ids = {node["name"]: node["id"] for node in main["nodes"]}

    def preview(name: str) -> dict:
        return json.loads((api / "nodes" / ids[name]).read_text())

    for name in ("synthetic_images", "episode_support_grids", "synthesis_previews"):
        assert preview(name)["preview_type"] == "ImagePreview" and len(preview(name)["preview"]) > 1000, name
    table = preview("student_results")["preview"]
    assert table["columns"] == ["method", "episodes", "accuracy", "seconds"] and len(table["data"]) == 5 + 1
    tint = run.per_episode.loc[run.per_episode["method"] == "tint", "accuracy"]
    assert table["data"][0][:3] == ["tint", 3, pytest.approx(tint.mean(), abs=1e-4)], "tint on top, its mean accuracy"
    trained = sum(json.loads(m.read_text())["seconds"]
                  for m in (run.project / "data" / "07_model_output" / "student_results").rglob("*.done"))
    assert table["data"][-1][3] == pytest.approx(trained, abs=0.1), "the last row sums the work's seconds"
    assert None not in {cell for row in table["data"] for cell in row}, "no 'null' filler"

    for pipeline in [main, *(json.loads(p.read_text()) for p in (api / "pipelines").iterdir())]:
        assert pipeline["layers"], f"{pipeline['selected_pipeline']}: Kedro-Viz disables layers on a cycle"
        assert all(n["layer"] for n in pipeline["nodes"] if n["type"] == "data"), pipeline["selected_pipeline"]
