"""Which images pre-training sees: seeded per-class held-out split, and the data fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tint_distill.data.sources import image_folder
from tint_distill.pretraining.data import pixel_fingerprint, pretraining_split


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    root = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "openclipart"
    return image_folder(str(root)).index


def test_split_holds_out_the_asked_number_per_class_and_only_the_given_classes(index):
    table = pretraining_split(index, ["boat", "smiley", "toy"], heldout_per_class=3, seed=0)
    assert set(table["class_name"]) == {"boat", "smiley", "toy"}
    assert (table[table["role"] == "heldout"].groupby("class_name").size() == 3).all()
    for name, group in table.groupby("class_name"):
        assert len(group) == int((index["class_name"] == name).sum()), "every image of the class is listed once"
    assert table["image_id"].is_unique


def test_split_is_seeded_and_independent_of_row_order_and_other_classes(index):
    a = pretraining_split(index, ["boat", "smiley"], 4, seed=1)
    shuffled = index.sample(frac=1.0, random_state=3)
    b = pretraining_split(shuffled, ["smiley", "boat", "toy"], 4, seed=1)
    held = lambda t: set(t.loc[t["role"] == "heldout", "image_id"])  # noqa: E731
    assert held(a) == held(b[b["class_name"] != "toy"])
    assert held(pretraining_split(index, ["boat", "smiley"], 4, seed=2)) != held(a), "another seed, another split"


def test_split_refuses_a_class_too_small_naming_it(index):
    n_boat = int((index["class_name"] == "boat").sum())
    with pytest.raises(ValueError, match=r"class 'boat' has \d+ images; pre-training needs at least"):
        pretraining_split(index, ["boat"], heldout_per_class=n_boat - 1, seed=0)


def test_pixel_fingerprint_follows_the_pixels_not_the_objects():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    one = [Image.fromarray(pixels), Image.fromarray(pixels[::-1].copy())]
    same = [Image.fromarray(pixels.copy()), Image.fromarray(pixels[::-1].copy())]
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    assert pixel_fingerprint(one) == pixel_fingerprint(same)
    assert pixel_fingerprint(one) != pixel_fingerprint([Image.fromarray(changed), one[1]])
    assert pixel_fingerprint(one) != pixel_fingerprint(one[::-1]), "order matters (it pairs with the labels)"
