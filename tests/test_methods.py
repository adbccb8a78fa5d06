"""A method is one registry entry: what it distils on, and the teacher's key over it, come together."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageOps

from tint_distill import methods
from tint_distill.data import sources
from tint_distill.methods import DistilledImages, EpisodeInputs, Method, RealUnlabeledSettings, methods_named
from tint_distill.params import ParameterError
from tint_distill.stages.distillation import EpisodeSource

from tests.conftest import episode_table



def flipped_supports(inputs: EpisodeInputs) -> DistilledImages:
    """The toy method of ARCHITECTURE.md: the supports mirrored."""
    rows = inputs.episodes[(inputs.episodes["episode"] == inputs.episode) & (inputs.episodes["role"] == "support")]
    ids, labels = rows["image_id"].tolist(), rows["label"].astype(int).tolist()
    return DistilledImages(lambda: ([ImageOps.mirror(inputs.images.load(i)) for i in ids], labels),
                           ["flipped", ids, inputs.images.content_hashes(ids)])


@pytest.fixture
def toy_method(monkeypatch):
    monkeypatch.setattr(methods, "REGISTRY", dict(methods.REGISTRY))  # registered for this test only
    return methods.register(Method("flipped_supports", "+ KD on the supports mirrored", flipped_supports))


def test_a_method_registered_once_is_distilled_on_and_keyed(toy_method, small_folder: Path):
    images = sources.image_folder(small_folder)
    source = EpisodeSource(images, episode_table(small_folder, queries=1), images.index, {}, RealUnlabeledSettings())
    chosen = methods_named(["supports_only", "flipped_supports"])
    assert [m.name for m in chosen] == ["supports_only", "flipped_supports"]

    data = source.load(0, chosen)
    pictures, labels = data.distilled["flipped_supports"]
    assert labels == [0, 0, 1, 1] and "supports_only" not in data.distilled
    assert pictures[0].tobytes() == ImageOps.mirror(data.supports[0]).tobytes()

    without = source.key(0, methods_named(["supports_only"]))
    with_toy = source.key(0, chosen)
    assert with_toy != without, "the teacher's outputs are keyed on what the new method distils on"
    (small_folder / "fish" / episode_table(small_folder, queries=1)["image_id"][0].split("/")[-1]).write_bytes(
        (small_folder / "clock" / episode_table(small_folder, queries=1)["image_id"][3].split("/")[-1]).read_bytes())
    changed = EpisodeSource(sources.image_folder(small_folder), episode_table(small_folder, queries=1), images.index, {},
                            RealUnlabeledSettings())
    assert changed.key(0, chosen) != with_toy, "a changed support changes the key"


def test_an_unknown_method_is_refused_with_the_known_ones():
    with pytest.raises(ParameterError, match="must be a non-empty subset of .*'tint'"):
        methods.parse_methods(["tint", "flipped_supports"])


def test_the_legacy_methods_keep_their_place_in_the_teachers_key(small_folder: Path):
    """The five methods of the paper put their images' keys where teacher fingerprints had them before
    methods were a registry, so finished teacher outputs stay valid after the change."""
    assert [m.legacy_slot for m in methods.REGISTRY.values()][:5] == [None, "synthetic", "synthetic", "real", "mined"]
    images = sources.image_folder(small_folder)
    inputs = EpisodeInputs(images, episode_table(small_folder, queries=1), images.index, 0, {}, RealUnlabeledSettings(2))
    parts = methods.methods_key(inputs, methods_named(["tint", "real_unlabeled"]), [])
    assert parts[0] == sorted([("tint/episode_0000/clock", None), ("tint/episode_0000/fish", None)])
    assert sorted(parts[1]) == [0, 1] and len(parts) == 2
