"""The methods compared: each trains the same student the same way, on different data.

A method is one :class:`Method` entry in :data:`REGISTRY`. For an episode, it gives the images it
distils on (besides the supports), the class each stands for, and the fingerprint of those
images, together, so what the teacher labels and what its cached outputs are keyed on cannot
disagree. Adding a method is one :func:`register` call (see ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tint_distill.params import ParameterError, SettingError, Settings

# The methods of the paper's table, in the order results are reported (filled by register below).
METHODS: tuple[str, ...] = ("supports_only", "textual_inversion", "tint", "real_unlabeled", "mined_real")
SAMPLERS = ("tint", "textual_inversion")  # the synthesis samplers; a method may train on one of them


@dataclass(frozen=True)
class RealUnlabeledSettings(Settings):
    """The ``real_unlabeled`` block: how many real images per class the upper-bound method uses."""

    images_per_class: int = 20
    seed: int = 0


@dataclass(frozen=True)
class MinedRealSettings(Settings):
    """The ``mined_real`` block: the images mined from the generator's own training classes."""

    images_per_class: int | None = None  # null: the synthetic volume (synthesis.images_per_class)
    split: str = "base"                  # where candidates come from: the generator's training classes

    def check(self) -> None:
        if self.images_per_class is not None and self.images_per_class < 1:
            raise SettingError("images_per_class", f"must be >= 1 or null, got {self.images_per_class}")


def parse_methods(methods: Iterable[str]) -> list[str]:
    """The ``methods`` parameter, in the canonical order."""
    if not isinstance(methods, (list, tuple)) or not methods or sorted(set(methods) - set(METHODS)):
        raise ParameterError(f"parameter 'methods' must be a non-empty subset of {list(METHODS)}, got {methods!r}.")
    return [m for m in METHODS if m in methods]


def samplers_for(methods: Iterable[str]) -> list[str]:
    """The synthesis samplers ``methods`` train on."""
    return [m for m in parse_methods(list(methods)) if m in SAMPLERS]


def check_kept_methods(keep_weights: Iterable[str]) -> None:
    """``student.keep_weights`` names methods."""
    unknown = sorted(set(keep_weights) - set(METHODS))
    if unknown:
        raise ParameterError(f"parameter 'student.keep_weights' must be a list of methods of {list(METHODS)}, "
                             f"got {list(keep_weights)!r}.")
