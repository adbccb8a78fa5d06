"""A logged model in MLflow 3 carries its own metrics, and none of its run's, whatever was logged
before or after it; it has a description and is registered under its name."""

from __future__ import annotations

import mlflow
import pytest

from tint_distill.data.images import read_rgb_image
from tint_distill.datasets.mlflow_models import DESCRIPTION_TAG, MODEL_STEP, LoggableModel, MlflowModelWithSignatureDataset
from tint_distill.distill import create_student
from tint_distill.distill.export import export_onnx


@pytest.fixture
def tracking(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("models", artifact_location=str(tmp_path / "mlruns")))
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(previous)


@pytest.mark.slow  # about 10 s: MLflow's SQLite store and model logging
def test_a_logged_model_carries_only_its_own_metrics_and_is_registered(tracking, embedded_root):
    classes = ["clock", "fish"]
    onnx_model = export_onnx(create_student(num_classes=2, image_size=32, seed=1).eval(), 32, classes)
    images = [read_rgb_image(sorted((embedded_root / name).glob("*.png"))[0]) for name in classes]
    own = {"student.accuracy": 0.75, "student.accuracy_low": 0.5, "student.accuracy_high": 0.9}
    model = LoggableModel.from_onnx(onnx_model, images, registered_model_name="tiny_student",
                                    description="The `tint` student of episode 1.", metrics=own,
                                    params={"method": "tint", "episode": 1, "classes": "clock, fish"})
    dataset = MlflowModelWithSignatureDataset(flavor="mlflow.onnx", save_args={"name": "student"})
    with mlflow.start_run() as run:
        mlflow.log_params({"seed": 7})
        mlflow.log_metric("generator.class_fidelity", 0.9)  # the run's, before the model (step 0)
        dataset.save(model)
        mlflow.log_metrics({"duration_s.total": 12.0, "accuracy.tint": 0.6})  # the run's, after it
    logged = mlflow.get_logged_model(dataset.model_info.model_id)
    assert {m.key: m.value for m in logged.metrics} == own, "the model's metrics are its own, and only those"
    assert {m.step for m in logged.metrics} == {MODEL_STEP}
    assert logged.params["method"] == "tint" and logged.params["classes"] == "clock, fish"
    assert logged.tags[DESCRIPTION_TAG] == "The `tint` student of episode 1."
    run_metrics = tracking.get_run(run.info.run_id).data.metrics
    assert {"generator.class_fidelity", "duration_s.total", "accuracy.tint", *own} == set(run_metrics)
    registered = tracking.get_registered_model("tiny_student")
    assert registered.description == "The `tint` student of episode 1."
    [version] = tracking.search_model_versions("name='tiny_student'")
    assert version.run_id == run.info.run_id and version.description == registered.description
    assert DESCRIPTION_TAG not in version.tags, "the description is the version's, not repeated in its tags"
