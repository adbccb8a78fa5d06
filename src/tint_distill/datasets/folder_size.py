"""Kedro-Viz's size of a dataset that is a folder: the total of the files in it.

Kedro-Viz's run hook sizes each dataset a run loads or saves with fsspec at the dataset's
``filepath`` (``fs.size``); a dataset without one shows "0 B", and a local folder's ``size`` is that
of its directory entry. A folder dataset inheriting :class:`FolderSize` answers ``filepath`` with
a ``folder-total://`` URL of its folder, whose filesystem (the local one) sizes a folder as the sum
of its files. Nothing else reads ``filepath`` (Kedro and kedro-mlflow use ``_filepath``/``_path``).
"""

from __future__ import annotations

import os

import fsspec
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "folder-total"


class FolderTotalFileSystem(LocalFileSystem):
    """Local files, where the size of a folder is the total size of the files under it."""

    protocol = PROTOCOL

    def size(self, path: str) -> int:
        return self.du(path, total=True) if self.isdir(path) else super().size(path)


fsspec.register_implementation(PROTOCOL, FolderTotalFileSystem, clobber=True)


class FolderSize:
    """A dataset kept in the local folder ``_path``, whose size Kedro-Viz shows as its files' total."""

    _path: object

    @property
    def filepath(self) -> str | None:
        path = str(self._path)
        if "://" in path and not path.startswith("file://"):
            return None  # a remote store: Kedro-Viz shows no size rather than a wrong one
        return f"{PROTOCOL}://{os.path.abspath(path.removeprefix('file://'))}"
