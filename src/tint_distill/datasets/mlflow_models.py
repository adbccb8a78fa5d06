"""A model for MLflow that carries its own signature, input example, metrics, description and
Model Registry name, logged through kedro-mlflow's model dataset.

MLflow 3 links a run's metrics to the model logged at the same step: every metric the run logged
at that step before ``log_model`` (``Model.log`` copies them to the model) and after it
(``log_metric`` without a ``model_id``). The run's own metrics are all at step 0 or at a
curve's steps (1, 2, ...), so a model is logged at :data:`MODEL_STEP`, where only its own metrics,
logged with its ``model_id``, are."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedro_mlflow.io.models import MlflowModelTrackingDataset

MODEL_STEP = -1  # the step of a logged model and of its own metrics, apart from every step of the run's metrics
DESCRIPTION_TAG = "mlflow.note.content"  # the Description the UI shows on a logged model's page


@dataclass
class LoggableModel:
    """What :class:`MlflowModelWithSignatureDataset` logs: the model object of the dataset's flavor,
    an input example and the signature inferred from it, and where to register it (None: log only);
    its own ``metrics`` and ``params`` (what it is: method, episode, classes), shown on its page, and
    a ``description`` (Markdown) for its page and for the registered model and version."""

    model: Any
    input_example: Any
    signature: Any
    registered_model_name: str | None = None
    metadata: dict = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)  # logged beside the model: {artifact path: content}
    description: str | None = None  # Markdown for its page and the registered version's (a model card, say)
    metrics: dict[str, float] = field(default_factory=dict)  # the model's own: its accuracy and CI, say
    params: dict[str, str] = field(default_factory=dict)  # what it is: its method, episode, classes

    @classmethod
    def from_onnx(cls, onnx_model: bytes, example_images: list, registered_model_name: str | None = None,
                  metadata: dict | None = None, files: dict[str, str | bytes] | None = None,
                  description: str | None = None, metrics: dict[str, float] | None = None,
                  params: dict[str, Any] | None = None) -> LoggableModel:
        """An exported ONNX student (``mlflow.onnx`` flavor) with real images as the input example; the
        signature comes from running the model on them."""
        import onnx
        from mlflow.models import infer_signature

        from tint_distill.distill.export import OUTPUT_NAMES, OnnxClassifier

        classifier = OnnxClassifier(onnx_model)
        example = classifier.to_batch(example_images)
        outputs = dict(zip(OUTPUT_NAMES, classifier.run(example)))
        return cls(model=onnx.load_from_string(onnx_model), input_example=example,
                   signature=infer_signature(example, outputs), registered_model_name=registered_model_name,
                   metadata={**(metadata or {}), **{k: v for k, v in classifier.metadata.items() if k != "input"}},
                   files=dict(files or {}), description=description, metrics=dict(metrics or {}),
                   params={key: str(value) for key, value in (params or {}).items()})


class MlflowModelWithSignatureDataset(MlflowModelTrackingDataset):
    """kedro-mlflow's ``MlflowModelTrackingDataset`` saving a :class:`LoggableModel`: its signature,
    input example, metadata, params and registered name join the catalog's ``save_args``, logged
    at :data:`MODEL_STEP`; its ``metrics`` are then logged with its
    ``model_id`` at that step, so that they, and no metric of the run, are the model's; its
    ``files`` (a model card, the weights) become artifacts of the run, and its ``description`` the
    logged model's, the registered model's and the version's description."""

    def _save(self, model: LoggableModel | None) -> None:
        if model is None:  # nothing to log (switched off in the parameters)
            return
        configured = dict(self._save_args)
        self._save_args = {
            **configured,
            "signature": model.signature,
            "input_example": model.input_example,
            "metadata": {**configured.get("metadata", {}), **model.metadata},
            "step": MODEL_STEP,
            "params": {**configured.get("params", {}), **model.params},
            **({"registered_model_name": model.registered_model_name} if model.registered_model_name else {}),
        }
        try:
            super()._save(model.model)
        finally:
            self._save_args = configured
        if not self._logging_activated:
            return
        import mlflow

        if model.metrics:
            mlflow.log_metrics(model.metrics, step=MODEL_STEP, model_id=self.model_info.model_id)
        if model.description:  # set after the registration, which copies a model's tags to the version's tags
            mlflow.set_logged_model_tags(self.model_info.model_id, {DESCRIPTION_TAG: model.description})
        version = getattr(self.model_info, "registered_model_version", None)
        if model.description and model.registered_model_name and version is not None:
            client = mlflow.MlflowClient()
            client.update_registered_model(model.registered_model_name, model.description)
            client.update_model_version(model.registered_model_name, str(version), model.description)
        if model.files:
            with tempfile.TemporaryDirectory() as folder:
                for artifact, content in model.files.items():
                    path = Path(folder) / artifact
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
                    folder_in_run = Path(artifact).parent.as_posix()
                    mlflow.log_artifact(str(path), artifact_path=None if folder_in_run == "." else folder_in_run)
