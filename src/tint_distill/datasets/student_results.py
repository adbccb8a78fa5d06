"""A trained student's result: ``<name>.json`` (accuracy, loss history, what it was) and, when
the student was kept, its weights beside it as ``<name>.safetensors`` (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from safetensors.torch import save_file

from tint_distill.distill.student import WEIGHTS_FILE_KEY, WEIGHTS_KEY


class StudentResultDataset(AbstractDataset[dict, dict]):
    """``save({..., "weights": state_dict})`` writes the JSON and the safetensors file; ``load()``
    returns the JSON with ``weights_file`` naming the safetensors file when there is one, so that
    reading every student's accuracy does not read every student's weights."""

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    @property
    def _weights_path(self) -> Path:
        return self._filepath.with_suffix(".safetensors")

    def load(self) -> dict:
        result = json.loads(self._filepath.read_text(encoding="utf-8"))
        if self._weights_path.is_file():
            result[WEIGHTS_FILE_KEY] = str(self._weights_path)
        return result

    def save(self, data: dict) -> None:
        result = dict(data)
        weights = result.pop(WEIGHTS_KEY, None)
        result.pop(WEIGHTS_FILE_KEY, None)
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        if weights is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(self._weights_path))
        self._filepath.write_text(json.dumps(result, indent=1), encoding="utf-8")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
