"""The README's task commands on a small folder of drawings: a registered MLflow model, an ONNX file
with a model card holding an accuracy estimate and its interval; then `predict` on a folder that
holds a corrupt file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT
from tests.conftest import kedro
from tint_distill.distill.export import OnnxClassifier


def _only_version(folder: Path) -> Path:
    """The one file of a Kedro-versioned dataset folder (<name>/<run time>/<name>)."""
    versions = sorted(folder.iterdir())
    assert len(versions) == 1, f"{folder}: expected one version, found {versions}"
    return versions[0] / folder.name


@pytest.mark.slow
def test_task_gives_a_carded_registered_model_and_predict_lists_bad_files(kedro_project: Path):
    models = kedro_project / "data" / "06_models" / "test"  # where the test environment reads its models
    shutil.copytree(PROJECT_ROOT / "data" / "06_models" / "generator", models / "generator")  # the shipped ones
    shutil.copy(PROJECT_ROOT / "data" / "06_models" / "base_student.safetensors", models)
    kedro(kedro_project, "example-task", "--classes", "fish,clock,house", "--images", "3", "--test", "1",
          "--unlabeled", "1", "--predict", "2")
    task = kedro_project / "data" / "01_raw" / "task"
    for old_name, new_name in (("clock", "01"), ("house", "None")):  # names a CSV round trip must not change
        for folder in (task, task / "test"):
            (folder / old_name).rename(folder / new_name)
    params = "task_path=data/01_raw/task,task.registered_model_name=drawings,task.folds=2"
    run = kedro(kedro_project, "run", "--pipelines", "task", "--env", "test", "--params", params)
    assert "Task accuracy: tint student:" in run.stdout + run.stderr

    models = kedro_project / "data" / "06_models" / "task"
    card = json.loads(_only_version(models / "model_card.json").read_text())
    assert card["classes"] == ["01", "None", "fish"]
    leave_out = card["accuracy"]["leave_out"]
    assert leave_out["splits"] == 2 and leave_out["held_out_images"] == 9, "2 folds hold out each of the 9 images once"
    for name in ("tint", "supports_only", "nn_teacher_features", "ncm_teacher_features", "nn_raw_pixels", "teacher"):
        assert leave_out["methods"][name]["predictions"] == 9, name
        assert card["accuracy"]["test"]["methods"][name]["predictions"] == 3, name
    assert set(leave_out["comparisons"]) == {f"tint_vs_{name}" for name in (
        "supports_only", "nn_teacher_features", "ncm_teacher_features", "nn_raw_pixels", "teacher")}
    tint = leave_out["methods"]["tint"]
    assert 0 <= tint["low"] <= tint["accuracy"] <= tint["high"] <= 1 and tint["high"] > tint["low"]
    assert leave_out["width"] == pytest.approx(tint["high"] - tint["low"])
    assert card["training"]["supports_per_class"] == {"01": 3, "None": 3, "fish": 3}
    assert card["training"]["unlabeled_real_images"] == 3 and card["training"]["synthetic_images"] == 3 * 4
    assert card["speed_cpu"]["images_per_s_batch_64"] > 0 and card["parameters"] > 100_000
    markdown = _only_version(models / "model_card.md").read_text()
    verdict = card["accuracy"]["verdict"]
    assert markdown.splitlines()[0] == f"**{verdict['line']}**" and "on 3 test images" in verdict["line"]
    assert verdict["line"].startswith("Beats every baseline" if verdict["beats_baselines"] else "Does NOT beat")
    assert "tint student:" in markdown and "held-out images (2 folds)" in markdown
    assert "nearest neighbour on raw pixels:" in markdown
    assert "tint − supports_only (the supports-only student; test, paired per image)" in markdown
    assert "3 unlabeled real images" in markdown
    assert card["generator"]["kind"] == "domain" and card["generator"]["fingerprint"] in markdown
    log = run.stdout + run.stderr
    assert ("WARNING" in log and "Task verdict: Does NOT beat" in log) != verdict["beats_baselines"]

    classifier = OnnxClassifier(_only_version(models / "student.onnx"))
    assert classifier.classes == card["classes"]

    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    task_run = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  order_by=["attributes.start_time DESC"])[0]
    assert task_run.data.tags["task.verdict"] == ("beats_baselines" if verdict["beats_baselines"]
                                                  else f"does_not_beat:{verdict['closest']}")
    assert task_run.data.metrics["task.beats_baselines"] == float(verdict["beats_baselines"])
    registered = client.search_model_versions("name='drawings'")
    assert len(registered) == (1 if verdict["beats_baselines"] else 0), "task.register: auto"
    assert task_run.data.tags["task.registered"] == ("drawings" if verdict["beats_baselines"] else "no")

    kedro(kedro_project, "run", "--pipelines", "task", "--env", "test", "--nodes", "task.deliver.log_mlflow_model",
          "--params", f"{params},task.register=always")
    versions = client.search_model_versions("name='drawings'")
    assert len(versions) == len(registered) + 1, "task.register: always registers whatever the verdict"
    version = max(versions, key=lambda v: int(v.version))
    assert "tint student:" in version.description, "the card on the registry page"
    info = mlflow.models.get_model_info(f"models:/drawings/{version.version}")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert [a.path for a in client.list_artifacts(version.run_id, "task_model")] == [
        "task_model/model_card.json", "task_model/model_card.md", "task_model/student.safetensors"]
    [logged] = [m for m in mlflow.search_logged_models(experiment_ids=[client.get_run(version.run_id).info.experiment_id],
                                                       output_format="list")
                if m.name == "task_student" and m.source_run_id == version.run_id]
    own = {m.key: m.value for m in logged.metrics}  # its own numbers, none of the run's (task.*, duration_s.*)
    assert all(key.startswith("task_model.") for key in own) and own["task_model.accuracy"] == pytest.approx(tint["accuracy"])
    assert own["task_model.accuracy_low"] == pytest.approx(tint["low"]) and "task_model.test_accuracy" in own
    assert logged.params["method"] == "tint" and logged.params["classes"] == "01, None, fish"

    predict_folder = kedro_project / "data" / "01_raw" / "predict"
    (predict_folder / "broken.png").write_bytes(b"\x89PNG but truncated")
    kedro(kedro_project, "run", "--pipelines", "predict", "--params", f"predict_path={predict_folder}")
    table = pd.read_csv(_only_version(kedro_project / "data" / "07_model_output" / "predictions.csv"),
                        keep_default_na=False)
    assert len(table) == 7 and {"p_01", "p_None", "p_fish"} <= set(table.columns)
    broken = table[table["file"].str.endswith("broken.png")].iloc[0]
    assert "cannot decode image" in broken["error"] and broken["predicted_class"] == ""
    good = table[table["error"] == ""]
    assert len(good) == 6 and set(good["predicted_class"]) <= set(card["classes"])


def _hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_task_with_unlabeled_images_trains_its_own_generator_reuses_it_and_leaves_the_shipped_one(
        kedro_project: Path):
    shipped = PROJECT_ROOT / "data" / "06_models" / "generator"
    models = kedro_project / "data" / "06_models" / "test"  # the experiment generator of the test environment
    shutil.copytree(shipped, models / "generator")
    shutil.copy(PROJECT_ROOT / "data" / "06_models" / "base_student.safetensors", models)
    before = {"shipped": _hashes(shipped), "experiment": _hashes(models / "generator")}
    kedro(kedro_project, "example-task", "--classes", "fish,clock", "--images", "2", "--test", "1",
          "--unlabeled", "2", "--predict", "0")
    params = "task_path=data/01_raw/task,task.folds=0"
    run = kedro(kedro_project, "run", "--pipelines", "task", "--env", "test", "--params", params,
                "--to-nodes", "task.inversion.specialise_classes")  # the card's part: the test above
    log = run.stdout + run.stderr
    domain = kedro_project / "data" / "06_models" / "task" / "generator"
    record = json.loads((domain / "training_record.json").read_text())
    assert record["training_images"] == 4 and record["history"]["classes"] == ["a photo"]
    assert re.search(r"loaded SD model \S*data/06_models/task/generator \(", log), "the domain generator is loaded"
    sidecars = list((kedro_project / "data" / "06_models" / "task" / "class_specialisations").rglob("*.json"))
    words = {json.loads(p.read_text())["textual_inversion"]["prompt_template"] for p in sidecars
             if "textual_inversion" in p.read_text()}
    assert words == {"a photo of a {token}"}
    assert f"fingerprint {record['fingerprint']}" in log  # the node saying which generator the task uses

    again = kedro(kedro_project, "run", "--pipelines", "task", "--env", "test", "--params", params,
                  "--to-nodes", "task.generator.choose_generator")
    assert "data/06_models/task/generator is up to date" in again.stdout + again.stderr
    assert json.loads((domain / "training_record.json").read_text()) == record, "reused, not retrained"
    assert {"shipped": _hashes(shipped), "experiment": _hashes(models / "generator")} == before
