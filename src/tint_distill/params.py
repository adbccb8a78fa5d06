"""Turning a parameter block into a typed settings object, with errors that name the parameter."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

from tint_distill.errors import UserInputError

T = TypeVar("T")


class ParameterError(UserInputError, ValueError):
    """A parameter block has unknown keys or values of the wrong kind."""

    where_to_look = ("conf/base/parameters*.yml, the environment's conf/<env>/, the data source's "
                     "conf/data_sources/<name>/, and the --params of the command")


class SettingError(UserInputError, ValueError):
    """One setting of a settings dataclass is invalid: raised by ``__post_init__`` checks so that
    :func:`settings_from_params` can name the parameter (``synthesis.alpha``)."""

    where_to_look = ParameterError.where_to_look

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")

    @classmethod
    def unless_one_of(cls, field: str, value: Any, choices) -> None:
        """Raise for ``field`` unless ``value`` is one of ``choices``."""
        if value not in choices:
            raise cls(field, f"must be one of {list(choices)}, got {value!r}")


_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_problem(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for a simple annotation (int, float, str, bool, X | None, tuple,
    dict, list), or None. Other annotations are not checked."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        return None if type(None) in options else "must be set (it cannot be null)"
    kinds = []
    for option in options:
        origin = typing.get_origin(option) or option
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if option in (int, str) and isinstance(value, option) and not isinstance(value, bool):
            return None
        if option is bool and isinstance(value, bool):
            return None
        if origin in (tuple, list) and isinstance(value, (tuple, list)):
            return None
        if origin is dict and isinstance(value, Mapping):
            return None
        if option not in _KINDS and origin not in (tuple, list, dict) and option is not type(None):
            return None  # an annotation this check does not know: accept
        kinds.append(_KINDS.get(option, {tuple: "a list", list: "a list", dict: "a mapping"}.get(origin, "null")))
    return f"must be {' or '.join(kinds)}, got {value!r}"


# Settings that were renamed, with what a user should write now.
RENAMED = {"dtype": "precision (fp32 | bf16 | fp16)",
           "max_repeats": "folds (task.folds: k-fold splits, each image held out once; default 3)"}


def _settings_class(hint: Any) -> type | None:
    """The settings dataclass a field holds (``X`` or ``X | None``), or None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return next((o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)), None)


def _unknown_keys_problem(cls: type, params: Mapping[str, Any]) -> str | None:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if not unknown:
        return None
    hints = {u: difflib.get_close_matches(u, allowed, n=1) for u in unknown}
    meant = "".join(f" ('{u}': did you mean '{h[0]}'?)" for u, h in hints.items() if h)
    meant += "".join(f" ('{u}' is now {RENAMED[u]})" for u in unknown if u in RENAMED and not hints[u])
    return f"has unknown keys {unknown}{meant}; allowed: {sorted(allowed)}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every settings block: a frozen dataclass that checks itself when it is made, however
    it is made (``cls(**block)`` by Kedro's parameter validation of a typed node input, or
    :func:`settings_from_params`): each value's type, YAML lists turned into the tuples declared,
    nested blocks given as mappings turned into their settings class, then :meth:`check`.
    Problems are :class:`SettingError` naming the field (``null_text.steps``)."""

    def __post_init__(self) -> None:
        try:
            hints = typing.get_type_hints(type(self))
        except NameError:  # an annotation that only exists for type checkers: skip the type checks
            hints = {}
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints.get(f.name, Any)
            nested = _settings_class(hint)
            if nested is not None and isinstance(value, Mapping):
                problem = _unknown_keys_problem(nested, value)
                if problem:
                    raise SettingError(f.name, problem)
                try:
                    value = nested(**value)
                except SettingError as error:
                    raise SettingError(f"{f.name}.{error.field}", error.problem) from error
                object.__setattr__(self, f.name, value)
                continue
            if nested is not None and isinstance(value, nested):
                continue
            problem = _type_problem(value, hint)
            if problem:
                raise SettingError(f.name, problem)
            if isinstance(value, list) and typing.get_origin(hint) is tuple:  # YAML lists where tuples are wanted
                object.__setattr__(self, f.name, tuple(value))
        self.check()

    def check(self) -> None:
        """Checks of the values together (a range, a choice): raise :class:`SettingError`."""


def settings_from_params(cls: type[T], params: Mapping[str, Any] | None, name: str) -> T:
    """``cls(**params)`` for a dataclass ``cls``, refusing unknown keys, values of the wrong type
    and invalid values, with errors that name the parameter (``parameter 'synthesis.alpha' ...``).
    An instance of ``cls`` (a block Kedro has already turned into its settings) is returned as is."""
    if isinstance(params, cls):
        return params
    if params is not None and not isinstance(params, Mapping):
        raise ParameterError(f"parameter '{name}' must be a mapping of settings, got {params!r}.")
    params = dict(params or {})
    problem = _unknown_keys_problem(cls, params)
    if problem:
        raise ParameterError(f"parameters '{name}' {problem}.")
    if not issubclass(cls, Settings):  # a plain dataclass: its values' types are checked here
        try:
            hints = typing.get_type_hints(cls)
        except NameError:
            hints = {}
        for field in dataclasses.fields(cls):
            if field.name not in params:
                continue
            problem = _type_problem(params[field.name], hints.get(field.name, Any))
            if problem:
                raise ParameterError(f"parameter '{name}.{field.name}' {problem}.")
            if isinstance(params[field.name], list) and "tuple" in str(field.type):
                params[field.name] = tuple(params[field.name])
    try:
        return cls(**params)
    except SettingError as error:
        raise ParameterError(f"parameter '{name}.{error.field}' {error.problem}.") from error
    except (TypeError, ValueError) as error:
        raise ParameterError(f"parameters '{name}': {error}") from error


def as_plain(value: Any) -> Any:
    """Settings (and the mappings, lists and tuples holding them) as plain dicts and lists: what a
    parameter block looks like in YAML, for logging and fingerprints."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    return value


DEVICES = ("auto", "cpu", "cuda")  # ``cuda:N`` picks one GPU
COMPUTE_PRECISIONS = ("fp32", "bf16")  # what the teacher and the students compute in (bf16: autocast)


def check_device(field: str, device: str) -> None:
    """``device`` is one of :data:`DEVICES` (or ``cuda:N``); whether this machine has it is
    :func:`resolve_device`'s question, asked where the work runs and before the run starts."""
    if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise SettingError(field, f"must be one of {list(DEVICES)} (or cuda:N), got {device!r}")


def computation_key(settings: Any) -> dict[str, Any]:
    """A settings block as the results computed with it are keyed: without ``device`` (the same
    result computed on a CPU or a GPU is reused) and without ``precision`` when it is fp32 (keys from
    before the setting existed stay valid); bf16 computes something else and stays in."""
    plain = as_plain(settings)
    plain.pop("device", None)
    if plain.get("precision") == "fp32":
        plain.pop("precision")
    return plain


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device '{device}' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'.")
    return torch.device(device)
