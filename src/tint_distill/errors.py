"""Errors shared by every stage (Kedro-free, torch-free)."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """An optimisation produced a NaN/inf loss; ``stage`` names it (placeholder until the core's
    errors are unified)."""

    def __init__(self, message: str = "", stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
