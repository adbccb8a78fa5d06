"""File locks that keep two runs of one project from writing the same outputs at once.

Plain Python (``fcntl.flock``): the operating system releases a lock when its process ends, even
when it is killed, so a crashed run never leaves a stale lock behind. The run lock is held on the
project's ``data/`` folder itself (:class:`FolderLock`), not on a file inside it: a lock file that
someone deletes as stale mid-run would let a second run in beside the first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from tint_distill.errors import UserInputError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not guarded
    fcntl = None


class ProjectBusyError(UserInputError, RuntimeError):
    """Another process holds the project's run lock."""


class FileLock:
    """An exclusive lock on ``path`` that records who holds it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def holder(self) -> dict:
        """What the current holder wrote into the lock file (empty if unknown)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _open(self) -> int:
        """The file descriptor the lock is held on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _describe(self, fd: int, description: dict) -> None:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({**description, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())

    def try_acquire(self, description: dict) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        if fcntl is None or self._fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if isinstance(error, BlockingIOError):
                return False
            raise
        self._describe(fd, description)
        self._fd = fd
        return True

    def acquire(self, description: dict, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the lock; False if it did not come."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire(description):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class FolderLock(FileLock):
    """An exclusive lock on the folder ``path.parent`` itself; ``path`` only says who holds it.

    Deleting ``path`` (it looks stale after every run) neither releases the lock nor lets another
    process take it: only the holder's exit does. Where a folder cannot be locked (NFS refuses an
    exclusive lock on a descriptor not open for writing), the lock is taken on ``path`` as a
    :class:`FileLock`, with a warning that deleting it mid-run is then unsafe."""

    _on_file = False

    def try_acquire(self, description: dict) -> bool:
        try:
            return super().try_acquire(description)
        except OSError as error:
            if self._on_file:
                raise
            logging.getLogger(__name__).warning(
                "%s cannot be locked here (%s): locking %s instead; do not delete it while a run works.",
                self.path.parent, error, self.path)
            self._on_file = True
            return super().try_acquire(description)

    def _open(self) -> int:
        if self._on_file:
            return super()._open()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

    def _describe(self, fd: int, description: dict) -> None:
        if self._on_file:
            return super()._describe(fd, description)
        note = json.dumps({**description, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            self.path.write_text(note)
        except OSError:
            pass  # the note is for people; the lock is held on the folder whatever happens to it
