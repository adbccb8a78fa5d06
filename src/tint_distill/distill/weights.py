"""Local weights files and model names, shared by the teacher and the students: reading a state dict,
loading it so that a file that does not fit fails loudly, and checking that a model name exists."""

from __future__ import annotations

import difflib
from collections.abc import Container, Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from . import resnet12 as _resnet12  # noqa: F401 - registers 'resnet12' in timm before names are checked
from .errors import WeightsMismatchError

SHOWN_KEYS = 8  # keys listed in a mismatch error; the count says how many more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors``, or a torch file (``.pth``/``.pt``/``.bin``) holding one,
    possibly under ``state_dict`` or ``model``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch cannot read is the wrong file
        raise WeightsMismatchError(f"{path}: not a readable state dict ({error})") from error
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsMismatchError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The key prefixes of a timm model's classifier head (``fc.``, ``head.``), from its pretrained cfg."""
    names = model.pretrained_cfg.get("classifier", "fc") if hasattr(model, "pretrained_cfg") else "fc"
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{keys[:SHOWN_KEYS]}{more}"


def load_exactly(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str,
                 skipped: tuple[str, ...] = ()) -> None:
    """Load ``state`` (read from ``path``) into ``model``: every parameter and buffer of the model
    (except those under the prefixes ``skipped``, such as a classifier head) must be in it with its
    shape, and it may hold nothing else outside ``skipped``. Otherwise
    :class:`~tint_distill.distill.errors.WeightsMismatchError` names the file, ``what`` it was meant
    for, and the missing, unexpected and misshapen keys; the model is then left unchanged."""
    state = {k: v for k, v in state.items() if not k.startswith(skipped)} if skipped else dict(state)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(skipped)} if skipped \
        else model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})"
                       for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or misshapen:
        problems = [f"{label} {_listed(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", misshapen)) if keys]
        raise WeightsMismatchError(f"{path}: does not fit {what}: " + "; ".join(problems)
                                   + f" (of {len(expected)} tensors). Is it the right file?")
    model.load_state_dict(state, strict=not skipped)


def unknown_model_problem(name: str, presets: Container[str] = ()) -> str | None:
    """Why ``name`` is not a model timm can build (nor one of ``presets``), with the closest names;
    None when it is one. Our own registered models (``resnet12``) count as timm's."""
    if name in presets or timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, [*timm.list_models(), *presets], n=3, cutoff=0.75)
    hint = f" (close names: {', '.join(repr(c) for c in close)})" if close else \
        " (see timm.list_models(); the few-shot ResNet-12 is 'resnet12')"
    return f"is not a timm model name{' or preset ' + str(sorted(presets)) if presets else ''}: got {name!r}{hint}"
