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
import unicodedata
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


class _AlreadySaved:
    """What a node's output becomes once its dataset has saved it (and done its deferred work)
    inside the node's clock (:class:`tint_distill.hooks.WorkInsideTheNode`): the datasets that
    do work on save take Kedro's own later save of it as a no-op."""

    def __repr__(self) -> str:
        return "ALREADY_SAVED"


ALREADY_SAVED = _AlreadySaved()


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


def episode_key(episode: int) -> str:
    """``episode_0003``: how every partitioned output names an episode."""
    return f"episode_{int(episode):04d}"


def partition_key(episode: int, class_name: str) -> str:
    """``episode_0003/fish``: where one class of one episode lives in partitioned outputs."""
    return f"{episode_key(episode)}/{slug(class_name)}"


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a class name.

    Names made only of ASCII letters, digits, ``_``, ``.`` and ``-`` (at most 64 characters,
    starting with a letter or digit) are kept as they are (``001.Black_footed_Albatross``). Any
    other name becomes a readable ASCII part plus the first 8 hex digits of the SHA-256 of the
    name (``a b`` -> ``a_b-c8687a08``, ``кот`` -> ``class-77095ebd``), so two different names
    never share a slug, and the class name itself is stored with every result.
    """
    text = str(name)
    if _SAFE_NAME.fullmatch(text):
        return text
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_")[:40] or "class"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class ClassNameCollisionError(ValueError):
    """Two class names would share one place on disk."""


def check_class_slugs(class_names) -> dict[str, str]:
    """``{class name: slug}``; two classes whose slugs are equal ignoring case (a case-insensitive
    file system would give them one folder) are an error naming both."""
    seen: dict[str, str] = {}
    slugs = {}
    for name in sorted({str(n) for n in class_names}):
        slugs[name] = slug(name)
        other = seen.setdefault(slugs[name].lower(), name)
        if other != name:
            raise ClassNameCollisionError(
                f"the classes '{other}' and '{name}' would be stored under one name ('{slugs[name]}', ignoring "
                "case); rename one of the class folders."
            )
    return slugs
