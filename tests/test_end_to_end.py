"""The whole `kedro run` on the test environment: interrupted and resumed TINT stages, then
distillation and evaluation producing the summary with every method."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import nbformat
from nbclient import NotebookClient
import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT
from tests.test_kedro_project import kedro


def markers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.done")) if folder.exists() else []


@pytest.mark.slow
def test_pipelines_resume_after_kill_and_produce_the_evaluation(kedro_project: Path):
    (kedro_project / ".gitignore").write_text("data/\nmlflow.db\nmlruns/\n")  # outputs do not make it dirty
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "project copy"]):
        subprocess.run([*git, *command], cwd=kedro_project, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=kedro_project, capture_output=True, text=True).stdout.strip()
    kedro(kedro_project, "run", "--env", "test", "--pipelines",
          "generator_pretraining,student_pretraining,data_episodes")
    episodes = pd.read_csv(kedro_project / "data" / "03_primary" / "episodes.csv")
    n_classes = len(episodes[["episode", "label"]].drop_duplicates())

    specialisations = kedro_project / "data" / "06_models" / "class_specialisations"
    env = {**os.environ, "COLUMNS": "400"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--env", "test", "--pipeline", "inversion"],
        cwd=kedro_project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 300
    while len(markers(specialisations)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(markers(specialisations))
    assert 2 <= finished < n_classes, f"the kill should land mid-run ({finished} of {n_classes} done)"

    resumed = kedro(kedro_project, "run", "--env", "test", "--pipelines", "inversion,synthesis")
    log = resumed.stdout + resumed.stderr
    recomputed = sum("class_specialisations: saved partition" in line for line in log.splitlines())
    assert recomputed == n_classes - finished, "only unfinished classes are recomputed"
    assert len(markers(specialisations)) == n_classes
    sidecars = [p for p in specialisations.rglob("*.json") if not p.name.startswith("_")]  # not _current.json
    assert len(list(specialisations.rglob("*.safetensors"))) == len(sidecars) == n_classes

    synthetic = kedro_project / "data" / "05_model_input" / "synthetic_images"
    for sampler in ("tint", "textual_inversion"):
        folders = [p.parent / p.name[: -len(".done")] for p in markers(synthetic / sampler)]
        counts = [len(list(folder.glob("*.png"))) for folder in folders]
        assert counts == [4] * n_classes, f"images_per_class {sampler} images for every (episode, class)"
    assert (kedro_project / "data" / "08_reporting" / "synthesis_preview.png").is_file()

    again = kedro(kedro_project, "run", "--env", "test", "--pipeline", "tint")
    output = again.stdout + again.stderr
    assert "saved partition" not in output, "nothing changed, so nothing is recomputed"
    assert output.count("already done and reused") == 2

    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    last = mlflow.search_runs(experiment_names=["tint_distill"], order_by=["start_time DESC"]).iloc[0]
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(last["run_id"])}
    assert {"synthesis_previews", "synthesis_preview"} <= paths
    assert last["params.inversion.null_text.guidance_scale"] == "7.5"

    kedro(kedro_project, "run", "--env", "test", "--pipelines", "distillation,evaluation")
    reporting = kedro_project / "data" / "08_reporting"
    summary = json.loads((reporting / "evaluation_summary.json").read_text())
    assert set(summary["methods"]) == {"supports_only", "textual_inversion", "tint", "real_unlabeled", "mined_real",
                                       "teacher"}
    for method in ("textual_inversion", "tint", "real_unlabeled", "mined_real"):
        assert 0 <= summary["methods"][method]["teacher_agreement_on_unlabeled"] <= 1
    inversion = summary["inversion"]  # the supports rebuilt from their inversion, against the VAE bound
    assert inversion["classes"] == n_classes and inversion["mse_mean"] > 0 and inversion["vae_mse_mean"] > 0
    assert inversion["ratio_of_means"] == pytest.approx(inversion["mse_mean"] / inversion["vae_mse_mean"])
    mined = pd.read_csv(kedro_project / "data" / "05_model_input" / "mined_real_images.csv")
    assert len(mined) == 3 * 3 * 4 and set(mined["source_class"]).isdisjoint(set(episodes["class_name"]))
    for stats in summary["methods"].values():
        assert 0 <= stats["accuracy"] <= 1 and stats["ci95"] >= 0
        assert stats["n_episodes"] == 3 and stats["n_queries_per_class"] == 4
    low, high = summary["comparisons"]["tint_vs_supports_only"]["ci95"]
    assert low <= summary["comparisons"]["tint_vs_supports_only"]["mean_diff"] <= high
    assert {"tint", "supports_only", "teacher"} <= set(summary["planner"])
    assert summary["speed"]["student"]["parameters"] < summary["speed"]["teacher"]["parameters"]
    per_episode = pd.read_csv(reporting / "episode_accuracies.csv")
    assert len(per_episode) == 6 * 3
    assert (reporting / "accuracy_per_method.png").is_file() and (reporting / "accuracy_vs_speed.png").is_file()
    costs = pd.read_csv(reporting / "unit_costs.csv")
    assert set(costs["stage"]) == {"specialisation", "synthesis", "teacher", "students"}
    assert len(costs) == n_classes + 2 * n_classes + 3 + 5 * 3 and (costs["seconds"] > 0).all()
    plan = summary["cost_plan"]
    assert plan["method"] == "tint" and plan["per_episode_s"]["total"] == pytest.approx(costs["seconds"].sum() / 3, rel=1e-3)
    needed = {row["half_width"]: row["episodes"] for row in summary["planner"]["tint"]["episodes_needed"]}
    for target in plan["targets"]:
        assert target["episodes"] == needed[target["half_width"]]
        assert target["wall_hours"]["8"] == pytest.approx(target["device_hours"] / 8)
    assert (reporting / "cost_plan.png").is_file()

    run = mlflow.search_runs(experiment_names=["tint_distill"], order_by=["start_time DESC"]).iloc[0]
    client = mlflow.MlflowClient()
    assert 0 <= run["metrics.accuracy.tint"] <= 1
    assert run["metrics.plan.1pt.episodes"] == plan["targets"][0]["episodes"]
    assert run["metrics.plan.1pt.wall_hours.8_workers"] == pytest.approx(plan["targets"][0]["wall_hours"]["8"])
    history = client.get_metric_history(run["run_id"], "loss.tint.mean")
    assert [m.step for m in history] == [1, 2], "one loss value per epoch, the mean over the episodes"
    assert len(client.get_metric_history(run["run_id"], "loss.tint.std")) == 2
    assert not client.get_metric_history(run["run_id"], "loss.tint.episode_0000"), "per-episode curves only on request"
    low, high = summary["comparisons"]["tint_vs_supports_only"]["ci95"]
    assert (run["metrics.diff_low.tint_vs_supports_only"], run["metrics.diff_high.tint_vs_supports_only"]) == pytest.approx((low, high))

    # The run says what it was: name, tags, description, input dataset, time per stage.
    assert run["tags.mlflow.runName"].startswith("distillation+evaluation · test · 3-way 2-shot · 3 episodes · "), run["tags.mlflow.runName"]
    assert (run["tags.env"], run["tags.pipeline"], run["tags.runner"]) == ("test", "distillation+evaluation", "SequentialRunner")
    assert run["tags.git_commit"] == head and run["tags.git_dirty"] == "false"
    note = run["tags.mlflow.note.content"]
    assert "3-way, 3 episodes, 4 queries per class" in note and "| tint |" in note and "- tint − supports_only: " in note
    student_markers = (kedro_project / "data" / "07_model_output" / "student_results").rglob("*.done")
    trained = sum(json.loads(m.read_text())["seconds"] for m in student_markers)
    assert run["metrics.duration_s.distillation.train_students"] >= trained > 0, "the training, done while saving, is counted"
    assert run["metrics.duration_s.total"] >= run["metrics.duration_s.distillation.train_students"]
    inputs = client.get_run(run["run_id"]).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["episodes"]
    assert {"evaluation/speed.json", "evaluation/evaluation_summary.json"} <= {a.path for a in client.list_artifacts(run["run_id"], "evaluation")}
    experiment = client.get_experiment_by_name("tint_distill")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development", "the UI opens on the runs table"
    logged = [m for m in mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
              if m.source_run_id == run["run_id"]]
    assert [m.name for m in logged] == ["student"], "the run's Models column shows its median tint student"
    tint = per_episode[per_episode["method"] == "tint"].sort_values(["accuracy", "episode"])
    info = mlflow.models.get_model_info(logged[0].model_uri)
    assert info.metadata["episode"] == int(tint["episode"].iloc[1]), "the median of 3 episodes"
    assert info.signature.outputs.input_names() == ["logits", "probabilities"] and info.saved_input_example_info

    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "explore_run.ipynb", as_version=4)
    (kedro_project / "notebooks").mkdir()
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(kedro_project / "notebooks")}}).execute()
    tables = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "text/html" in o.get("data", {})]
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the notebook shows the support grid and the synthetic images"
    assert any("tint" in t["data"]["text/html"] and "ci95" in t["data"]["text/html"] for t in tables)

    # Kedro-Viz, built with previews: the stages collapse, the outputs show what they hold and the time it took.
    kedro(kedro_project, "viz", "build", "--include-previews")
    api = kedro_project / "build" / "api"
    main = json.loads((api / "main").read_text())
    assert {"data_episodes", "inversion", "synthesis", "distillation", "evaluation"} <= set(main["modular_pipelines"])
    ids = {node["name"]: node["id"] for node in main["nodes"]}

    def preview(name: str) -> dict:
        return json.loads((api / "nodes" / ids[name]).read_text())

    for name in ("synthetic_images", "episode_support_grids", "synthesis_previews"):
        assert preview(name)["preview_type"] == "ImagePreview" and len(preview(name)["preview"]) > 1000, name
    table = preview("student_results")["preview"]
    assert table["columns"][:2] == ["partition", "seconds"] and len(table["data"]) == 5 * 3 + 1
    assert table["data"][-1][1] == pytest.approx(trained, abs=0.1), "the last row sums the work's seconds"
