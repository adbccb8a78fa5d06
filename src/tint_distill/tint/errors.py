"""Exceptions raised by the TINT core, each with a message that says what to do."""

from __future__ import annotations

# The project's one error for a diverging optimisation (stage "textual_inversion" or
# "null_text_inversion" here), importable from this module as before.
from tint_distill.errors import NonFiniteLossError, UserInputError

__all__ = ["ModelFolderError", "NonFiniteLossError", "SpecialisationError", "TintError"]


class TintError(UserInputError):
    """Base class of every error raised on purpose by :mod:`tint_distill.tint`: a model folder or a
    saved file that does not fit, a user's to fix (the command line shows the message alone)."""


class ModelFolderError(TintError, FileNotFoundError):
    """A Stable Diffusion folder is missing, incomplete, or was given as a hub id."""


class SpecialisationError(TintError, ValueError):
    """A saved class specialisation does not fit the model it is applied to, or is malformed."""
