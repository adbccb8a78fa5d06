"""Partition keys and the file-name-safe names of classes: collision-free, readable where possible,
and a key's text turned back into the key it came from."""

import pytest

from tint_distill.keys import (ClassNameCollisionError, PartitionKey, check_class_slugs, episode_key, partition_key,
                               slug)


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


@pytest.mark.parametrize(("episode", "class_name", "method", "text"), [
    (3, None, None, "episode_0003"),
    (3, "fish", None, "episode_0003/fish"),
    (12, "001.Black_footed_Albatross", "tint", "tint/episode_0012/001.Black_footed_Albatross"),
    (0, "кот", "textual_inversion", f"textual_inversion/episode_0000/{slug('кот')}"),
    (0, "a b", None, f"episode_0000/{slug('a b')}"),
    (7, None, "real_unlabeled", "real_unlabeled/episode_0007"),
    (12345, "fish", None, "episode_12345/fish"),
])
def test_a_partition_key_is_written_and_read_back(episode, class_name, method, text):
    key = PartitionKey.of(episode, class_name, method)
    assert key.format() == str(key) == text
    assert PartitionKey.parse(text) == key, "the text gives back the key it came from"
    assert PartitionKey.parse(key.format()).format() == text
    assert key.class_slug == (None if class_name is None else slug(class_name)) and key.episode == episode
    if class_name is not None:
        assert partition_key(episode, class_name, method) == text
    assert episode_key(episode) in text


def test_a_non_ascii_class_name_round_trips_through_its_slug():
    key = PartitionKey.of(2, "собака", "tint")
    text = key.format()
    assert text.isascii() and text.startswith("tint/episode_0002/class-")
    parsed = PartitionKey.parse(text)
    assert parsed == key and parsed.class_slug == slug("собака") and parsed.method == "tint"
    assert PartitionKey.parse(PartitionKey.of(2, "кот", "tint").format()) != parsed, "two classes, two keys"


@pytest.mark.parametrize("text", ["", "fish", "episode_3", "episode_0003/fish/extra", "Tint/episode_0003",
                                  "tint/episode_0003/", "/episode_0003"])
def test_text_that_is_no_partition_key_is_refused(text):
    with pytest.raises(ValueError, match="is not a partition key"):
        PartitionKey.parse(text)
