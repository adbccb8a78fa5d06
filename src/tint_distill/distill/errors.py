"""Exceptions raised by :mod:`tint_distill.distill`, each with a message that says what to do."""

from __future__ import annotations

# The project's one error for a diverging optimisation (stage "student" or "teacher_finetune"
# here), importable from this module as before.
from tint_distill.errors import NonFiniteLossError, UserInputError

__all__ = ["DistillError", "NonFiniteLossError", "WeightsFileNotFoundError", "WeightsMismatchError"]


class DistillError(UserInputError):
    """Base class of every error raised on purpose by :mod:`tint_distill.distill`: a weights file that
    is missing or does not fit, a user's to fix (the command line shows the message alone)."""


class WeightsFileNotFoundError(DistillError, FileNotFoundError):
    """A local weights file (teacher backbone or student initialisation) does not exist."""

    def __init__(self, path: str, what: str, hint: str) -> None:
        self.path = path
        super().__init__(f"{path}: {what} weights file not found. {hint}")


class WeightsMismatchError(DistillError, ValueError):
    """A weights file does not fit the model it is loaded into."""

