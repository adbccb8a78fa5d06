"""Units of expensive work that can be skipped when already done.

A node returns ``{partition key: Deferred(fingerprint, compute)}``; the catalog dataset
(:class:`tint_distill.datasets.ResumablePartitionedDataset`) runs ``compute`` only for keys
whose saved fingerprint differs, saving each result as soon as it exists. An interrupted
run therefore resumes where it stopped, and a changed setting recomputes what it affects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Deferred:
    """``compute()`` produces the value; ``fingerprint`` identifies everything it depends on.

    ``force``: compute even when a saved value has the same fingerprint (an explicit request
    to redo the work; the fingerprint saved afterwards is still ``fingerprint``).
    """

    fingerprint: str
    compute: Callable[[], Any]
    force: bool = False

    def __call__(self) -> Any:
        return self.compute()


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def folder_fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """Fingerprint of a model folder from file names, sizes and their first and last MiB.

    Cheap even for multi-GB weights, and unlike modification times it does not change when
    identical weights are written again.
    """
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}:{size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(sample_bytes))
            if size > 2 * sample_bytes:
                handle.seek(-sample_bytes, 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def episode_key(episode: int) -> str:
    """``episode_0003``: how every partitioned output names an episode."""
    return f"episode_{int(episode):04d}"


def partition_key(episode: int, class_name: str) -> str:
    """``episode_0003/fish``: where one class of one episode lives in partitioned outputs."""
    return f"{episode_key(episode)}/{slug(class_name)}"


def slug(name: str) -> str:
    """A file-name-safe form of a class name (``001.Black_footed_Albatross`` -> ``001_Black_footed_Albatross``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or "class"
