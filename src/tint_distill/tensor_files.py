"""Safetensors files whose bytes depend only on what they hold.

The safetensors library writes a file's ``__metadata__`` in an order that changes from process to
process (a hash map), so one result saved twice gave two byte strings. These helpers write the
same tensors and metadata with the metadata keys sorted: any loader reads them as before.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding of ``tensors`` with ``metadata``, its header in one fixed order."""
    raw = save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, metadata=metadata)
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    ordered = {key: header[key] for key in sorted(header)}
    if "__metadata__" in ordered:
        ordered["__metadata__"] = dict(sorted(ordered["__metadata__"].items()))
    encoded = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (-len(encoded) % 8)  # the tensor data starts 8-byte aligned, as the library writes it
    return struct.pack("<Q", len(encoded)) + encoded + raw[8 + length:]


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write :func:`tensors_to_bytes` to ``path``."""
    Path(path).write_bytes(tensors_to_bytes(tensors, metadata))
