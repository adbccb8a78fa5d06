"""A dict of tensors in one safetensors file (no pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset
from safetensors.torch import load_file, save_file


class TensorDictDataset(AbstractDataset[dict, dict]):
    """``{name: tensor}`` saved to and loaded from a ``.safetensors`` file."""

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, torch.Tensor]:
        return load_file(str(self._filepath))

    def save(self, data: dict[str, torch.Tensor]) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in data.items()}, str(self._filepath))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
