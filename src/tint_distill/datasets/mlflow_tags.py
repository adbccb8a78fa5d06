"""Tags of the active MLflow run, saved by a node (the task's verdict, say)."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset


class MlflowTagsDataset(AbstractDataset[dict, dict]):
    """``save({name: value})`` sets the tags on the active MLflow run (none active, as when MLflow is
    switched off: nothing to tag) and keeps them for ``load()`` in this process."""

    def __init__(self, *, metadata: dict | None = None):
        self._tags: dict[str, str] | None = None
        self.metadata = metadata

    def load(self) -> dict:
        if self._tags is None:
            from kedro.io import DatasetError

            raise DatasetError("No tags were saved in this run: the node that saves them has not run.")
        return dict(self._tags)

    def save(self, data: dict) -> None:
        import mlflow

        self._tags = {str(name): str(value) for name, value in data.items()}
        if mlflow.active_run() is not None:
            mlflow.set_tags(self._tags)

    def _exists(self) -> bool:
        return self._tags is not None

    def _describe(self) -> dict[str, Any]:
        return {"tags": self._tags}
