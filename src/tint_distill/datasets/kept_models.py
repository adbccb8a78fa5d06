"""A trained model that a save replaces is moved aside, never deleted: ``<stem>.previous-<fingerprint><suffix>``
beside it (a folder or a file alike), where a later run asking for that fingerprint finds it again."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)


def previous_path(path: Path, fingerprint: str) -> Path:
    """Where the model at ``path`` trained for ``fingerprint`` is kept once replaced."""
    return path.with_name(f"{path.stem}.previous-{fingerprint}{path.suffix}")


def keep_aside(path: Path, fingerprint: str | None) -> None:
    """Move the model at ``path`` (if any) to :func:`previous_path`; a model already kept there (the
    same fingerprint trained again on request) stays, and this one gets a name of its own."""
    if not path.exists():
        return
    kept = previous_path(path, fingerprint or "unknown")
    if kept.exists():
        kept = previous_path(path, f"{fingerprint or 'unknown'}-{uuid.uuid4().hex[:8]}")
    os.replace(path, kept)
    logger.info("Kept the replaced model as %s", kept)
