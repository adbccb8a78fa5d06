"""Exceptions raised by :mod:`tint_distill.distill`, each with a message that says what to do."""

from __future__ import annotations


class DistillError(Exception):
    """Base class of every error raised on purpose by :mod:`tint_distill.distill`."""


class WeightsFileNotFoundError(DistillError, FileNotFoundError):
    """A local weights file (teacher backbone or student initialisation) does not exist."""

    def __init__(self, path: str, what: str, hint: str) -> None:
        self.path = path
        super().__init__(f"{path}: {what} weights file not found. {hint}")


class WeightsMismatchError(DistillError, ValueError):
    """A weights file does not fit the model it is loaded into."""


class NonFiniteLossError(DistillError, FloatingPointError):
    """Student training produced a NaN/inf loss (``epoch`` and ``step`` are 1-based)."""

    def __init__(self, epoch: int, step: int, loss: float, detail: str = "") -> None:
        self.epoch, self.step, self.loss = epoch, step, loss
        message = f"student training: non-finite loss ({loss}) at epoch {epoch}, step {step}"
        if detail:
            message += f" ({detail})"
        message += "; check the learning rate, the teacher logits (NaN/inf?) and the input images"
        super().__init__(message)
