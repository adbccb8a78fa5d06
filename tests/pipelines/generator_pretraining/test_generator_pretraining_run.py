"""`kedro run --pipelines generator_pretraining` on the test environment: a generator is trained
from scratch (nothing shipped is copied into the project) into the environment's own folder,
judged, logged, and not retrained by a second run.

The first run is the session's pretraining run (:func:`tests.conftest.pretraining`, which also
trains the base student and draws the episodes); the second runs in a copy of its project."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import Pretraining, copy_pretrained, kedro


@pytest.mark.slow
def test_generator_is_trained_from_scratch_judged_and_cached(pretraining: Pretraining, tmp_path: Path):
    project = pretraining.project  # read only: shared by the session
    model = project / "data" / "06_models" / "test" / "generator"  # the test environment's own
    record = json.loads((model / "training_record.json").read_text())
    history = record["history"]
    assert history["vae_steps_done"] == 4 and history["unet_steps_done"] == 4, "trained with the test settings"
    assert len(history["vae_loss"]) == 4 and len(history["unet_loss"]) == 4
    assert history["classes"] == sorted(history["classes"]) and len(history["classes"]) == 16

    split = pd.read_csv(project / "data" / "02_intermediate" / "pretraining_images.csv")
    assert set(split["class_name"]) == set(history["classes"]), "only the base classes are used"
    assert not {"fish", "fruit", "bird"} & set(split["class_name"]), "never a novel class"
    assert (split.groupby("class_name")["role"].apply(lambda r: (r == "heldout").sum()) == 2).all()
    assert record["training_images"] == int((split["role"] == "train").sum())

    reporting = project / "data" / "08_reporting"
    quality = json.loads((reporting / "generator_quality.json").read_text())
    assert quality["chance"] == pytest.approx(1 / 16)
    assert quality["class_fidelity"]["n_images"] == 16 * 2
    assert 0 <= quality["class_fidelity"]["overall"] <= 1 and quality["vae_mse_heldout"] > 0
    for name in ("generator_samples.png", "generator_reconstructions.png", "generator_training_curves.png"):
        assert (reporting / name).stat().st_size > 1000

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tint_distill"], order_by=["start_time DESC"])
    assert len(runs) == 1, "the session's pretraining run only"
    run = runs.iloc[0]
    assert run["metrics.generator.class_fidelity"] == pytest.approx(quality["class_fidelity"]["overall"])
    assert run["metrics.generator.class_fidelity_chance"] == pytest.approx(1 / 16)
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run["run_id"], "generator.unet_loss")) == 1  # every 10th step of 4
    assert {"generator"} <= {a.path for a in client.list_artifacts(run["run_id"])}

    copy = copy_pretrained(project, tmp_path / "project")
    weights = sorted((copy / model.relative_to(project)).rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    second = kedro(copy, "run", "--env", "test", "--pipelines", "generator_pretraining")
    assert "up to date" in second.stdout + second.stderr
    assert [p.stat().st_mtime_ns for p in weights] == stamps, "a second run does not retrain"
    assert "VAE pre-training" not in second.stdout + second.stderr
    assert "VAE pre-training" in pretraining.log
    for folder in (project, copy):
        assert not (folder / "data" / "06_models" / "generator").exists(), "the shipped place is not written"
