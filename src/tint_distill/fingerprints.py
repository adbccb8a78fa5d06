"""Fingerprints: short stable hashes of everything a result depends on (settings, pixels, models).

A stored result is kept under the fingerprint of its inputs, so a rerun reuses it exactly when
nothing it depends on changed (see :mod:`tint_distill.datasets.resumable_partitions`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _digest_ends(digest, file: Path, size: int, sample_bytes: int) -> None:
    """Feed the first and (for large files) the last ``sample_bytes`` of ``file`` into ``digest``."""
    with file.open("rb") as handle:
        digest.update(handle.read(sample_bytes))
        if size > 2 * sample_bytes:
            handle.seek(-sample_bytes, 2)
            digest.update(handle.read())


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
        _digest_ends(digest, file, size, sample_bytes)
    return digest.hexdigest()[:16]


def file_fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """Fingerprint of one file (a weights file, say) from its size and first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    _digest_ends(digest, path, size, sample_bytes)
    return digest.hexdigest()[:16]
