"""Which images a generator is pre-trained on, and which are held out to judge it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

ROLES = ("train", "heldout")


def pretraining_split(index: pd.DataFrame, classes: Sequence[str], heldout_per_class: int,
                      seed: int) -> pd.DataFrame:
    """Assign each image of ``classes`` to ``train`` or ``heldout`` (``heldout_per_class`` per class).

    ``index`` has ``image_id`` and ``class_name`` columns (an image index). The draw is seeded
    per class, so it does not depend on the row order of the index or on the other classes.
    Returns ``image_id, class_name, role`` sorted by class then image id. Raises ``ValueError``
    naming the class when a class has fewer than ``heldout_per_class + 2`` images.
    """
    if heldout_per_class < 0:
        raise ValueError(f"heldout_per_class must be >= 0, got {heldout_per_class}")
    classes = sorted(dict.fromkeys(str(c) for c in classes))
    if not classes:
        raise ValueError("no classes to pre-train on")
    rows = []
    for class_name in classes:
        ids = sorted(index.loc[index["class_name"].astype(str) == class_name, "image_id"].astype(str))
        if len(ids) < heldout_per_class + 2:
            raise ValueError(
                f"class '{class_name}' has {len(ids)} images; pre-training needs at least "
                f"{heldout_per_class + 2} (heldout_per_class={heldout_per_class} held out, 2 to train on)"
            )
        digest = int.from_bytes(hashlib.sha256(class_name.encode()).digest()[:4], "little")
        order = np.random.default_rng([seed, digest]).permutation(len(ids))
        heldout = {ids[i] for i in order[:heldout_per_class]}
        rows += [(image_id, class_name, "heldout" if image_id in heldout else "train") for image_id in ids]
    return pd.DataFrame(rows, columns=["image_id", "class_name", "role"])


def pixel_fingerprint(images: Iterable[Image.Image]) -> str:
    """A hash of the decoded pixels (size, mode and bytes) of ``images``, in order.

    Identifies the training data itself, whatever the files are named or stored as.
    """
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()[:16]
