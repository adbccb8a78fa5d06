"""Exceptions raised by the TINT core, each with a message that says what to do."""

from __future__ import annotations


class TintError(Exception):
    """Base class of every error raised on purpose by :mod:`tint_distill.tint`."""


class ModelFolderError(TintError, FileNotFoundError):
    """A Stable Diffusion folder is missing, incomplete, or was given as a hub id."""


class NonFiniteLossError(TintError, FloatingPointError):
    """An optimisation produced a NaN/inf loss.

    ``stage`` names the optimisation ("textual inversion", "null-text inversion"), ``step``
    is the 1-based outer step (TI step, or NTI timestep index) and ``inner_step`` the 1-based
    inner step of null-text inversion (``None`` for textual inversion).
    """

    def __init__(self, stage: str, step: int, loss: float, *, inner_step: int | None = None,
                 detail: str = "") -> None:
        self.stage = stage
        self.step = step
        self.inner_step = inner_step
        self.loss = loss
        where = f"step {step}" + (f", inner step {inner_step}" if inner_step is not None else "")
        message = f"{stage}: non-finite loss ({loss}) at {where}"
        if detail:
            message += f" ({detail})"
        message += ("; check the learning rate, the input images (NaN/inf?) and the model weights "
                    "(in fp16, an overflow: try precision bf16 or fp32)")
        super().__init__(message)


class SpecialisationError(TintError, ValueError):
    """A saved class specialisation does not fit the model it is applied to, or is malformed."""
