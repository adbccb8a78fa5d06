"""Where results live: partition keys and file-name-safe class names."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from tint_distill.errors import UserInputError


_KEY = re.compile(r"^(?:(?P<method>[a-z_]+)/)?episode_(?P<episode>\d{4,})(?:/(?P<class_slug>[^/]+))?$")


@dataclass(frozen=True, order=True)
class PartitionKey:
    """Where one partition of an episode's work lives: ``[method/]episode_0003[/class]``.

    ``method`` is the method (or synthesis sampler) the partition belongs to, if any; ``class_slug``
    the class (:func:`slug` of its name), if the partition is one class's. :meth:`of` makes one
    from a class *name*; :meth:`format` and :meth:`parse` turn it into the text the stores use
    and back.
    """

    episode: int
    class_slug: str | None = None
    method: str | None = None

    @classmethod
    def of(cls, episode: int, class_name: str | None = None, method: str | None = None) -> PartitionKey:
        return cls(int(episode), None if class_name is None else slug(class_name), method)

    def format(self) -> str:
        return "/".join(part for part in (self.method, episode_key(self.episode), self.class_slug) if part)

    __str__ = format

    @classmethod
    def parse(cls, text: str) -> PartitionKey:
        match = _KEY.match(text)
        if match is None:
            raise ValueError(f"'{text}' is not a partition key ([method/]episode_NNNN[/class])")
        return cls(int(match["episode"]), match["class_slug"], match["method"])


def episode_key(episode: int) -> str:
    """``episode_0003``: how every partitioned output names an episode."""
    return f"episode_{int(episode):04d}"


def partition_key(episode: int, class_name: str, method: str | None = None) -> str:
    """``[method/]episode_0003/fish``: where one class of one episode lives in partitioned outputs."""
    return PartitionKey.of(episode, class_name, method).format()


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


class ClassNameCollisionError(UserInputError, ValueError):
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
