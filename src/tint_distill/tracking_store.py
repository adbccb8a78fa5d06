"""The MLflow tracking store checked before a run starts, so a damaged one stops the run at once,
named, with what to do, instead of at the last node after all the work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tint_distill.errors import UserInputError


class TrackingStoreError(UserInputError, RuntimeError):
    """The MLflow tracking store cannot be used as it is."""


def sqlite_store_path(tracking_uri: str | None, project_path: str | Path) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative to the project), else None."""
    prefix = "sqlite:///"
    if not tracking_uri or not tracking_uri.startswith(prefix):
        return None
    path = Path(tracking_uri[len(prefix):].split("?", 1)[0])
    return path if path.is_absolute() else Path(project_path) / path


def check_sqlite_store(path: Path) -> None:
    """Raise :class:`TrackingStoreError` if the SQLite store at ``path`` exists and is damaged
    (SQLite's own ``quick_check``: every page readable, every index consistent). A missing file
    is fine: MLflow creates it."""
    if not path.exists():
        return
    try:
        # read-write: a run killed mid-write leaves a hot journal, which SQLite rolls back on open (as
        # MLflow would); read-only, that journal would look like damage
        connection = sqlite3.connect(path, timeout=30)
        try:
            rows = connection.execute("PRAGMA quick_check").fetchall()
        finally:
            connection.close()
        problem = None if rows == [("ok",)] else "; ".join(str(row[0]) for row in rows[:3])
    except sqlite3.DatabaseError as error:
        problem = str(error)
    if problem:
        companions = [p.name for p in (path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm")) if p.exists()]
        also = f" with {', '.join(companions)} beside it" if companions else ""
        raise TrackingStoreError(
            f"The MLflow store {path} is damaged ({problem}); nothing has run. Move it aside{also} "
            f"(`mv {path} {path}.damaged`{''.join(f'; mv {path.parent / c} {path.parent / c}.damaged' for c in companions)}) "
            "and run again: MLflow starts a new store, and every output under data/ is untouched (only the old "
            "runs' history is missing from the UI; SQLite's `.recover` command may get it back from the moved file).")
