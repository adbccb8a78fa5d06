"""Turning a parameter block into a typed settings object, with errors that name the parameter."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter block has unknown keys or values of the wrong kind."""


def settings_from_params(cls: type[T], params: Mapping[str, Any] | None, name: str) -> T:
    """``cls(**params)`` for a dataclass ``cls``, refusing unknown keys and invalid values."""
    params = dict(params or {})
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ParameterError(f"parameters '{name}' has unknown keys {unknown}; allowed: {sorted(allowed)}.")
    for field in dataclasses.fields(cls):  # YAML lists where the dataclass wants tuples
        if isinstance(params.get(field.name), list) and "tuple" in str(field.type):
            params[field.name] = tuple(params[field.name])
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise ParameterError(f"parameters '{name}': {error}") from error


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device '{device}' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'.")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``float16``/``bfloat16`` on a GPU; on the CPU half precision is slow and poorly supported, so float32."""
    import torch

    if dtype not in ("float32", "float16", "bfloat16"):
        raise ParameterError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}.")
    return getattr(torch, dtype) if device.type == "cuda" else torch.float32
