"""Partition names of class names: collision-free, readable where possible."""

import pytest

from tint_distill.work import ClassNameCollisionError, check_class_slugs, partition_key, slug


@pytest.mark.parametrize("name", ["fish", "001.Black_footed_Albatross", "ice-cream_2"])
def test_file_name_safe_class_names_are_kept_as_they_are(name):
    assert slug(name) == name


def test_names_that_used_to_collide_get_distinct_slugs():
    names = ["кот", "собака", "a b", "a_b", "a/b", "a:b", "x" * 80, "x" * 80 + "y"]
    slugs = [slug(n) for n in names]
    assert len(set(slugs)) == len(names), dict(zip(names, slugs))
    assert slug("a b").startswith("a_b-") and slug("кот").startswith("class-")
    assert all(s.isascii() and "/" not in s and len(s) <= 64 for s in slugs)
    assert slug("кот") == slug("кот"), "stable across calls"
    assert partition_key(3, "кот") == f"episode_0003/{slug('кот')}"


def test_classes_that_differ_only_by_case_are_refused_naming_both():
    assert check_class_slugs(["fish", "кот"]) == {"fish": "fish", "кот": slug("кот")}
    with pytest.raises(ClassNameCollisionError, match="'Fish' and 'fish'"):
        check_class_slugs(["fish", "Fish", "clock"])
