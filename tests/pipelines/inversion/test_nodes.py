from pathlib import Path

import pandas as pd
import pytest
import torch

from tint_distill.data import sources
from tint_distill.pipelines.inversion.nodes import ClassSpecialisationError, specialise_classes
from tint_distill.tint import ModelFolderError


def episode_table(folder: Path) -> pd.DataFrame:
    rows = []
    for label, name in enumerate(["fish", "clock"]):
        ids = sorted(p.relative_to(folder).as_posix() for p in (folder / name).glob("*.png"))
        rows += [(0, label, name, "support", i, image_id) for i, image_id in enumerate(ids[:2])]
    return pd.DataFrame(rows, columns=["episode", "label", "class_name", "role", "position", "image_id"])


PARAMS = {"device": "cpu", "textual_inversion": {"num_steps": 3}, "null_text": {"num_steps": 3, "inner_steps": 2}}


def test_specialisation_per_class_is_deferred_and_fingerprinted(tiny_generator: Path, small_folder: Path, tmp_path: Path):
    work = specialise_classes(tiny_generator, sources.image_folder(small_folder), episode_table(small_folder), PARAMS)
    assert sorted(work) == ["episode_0000/clock", "episode_0000/fish"]
    again = specialise_classes(tiny_generator, sources.image_folder(small_folder), episode_table(small_folder), PARAMS)
    assert {k: w.fingerprint for k, w in work.items()} == {k: w.fingerprint for k, w in again.items()}
    changed = specialise_classes(
        tiny_generator, sources.image_folder(small_folder), episode_table(small_folder),
        {**PARAMS, "textual_inversion": {"num_steps": 4}},
    )
    assert all(changed[k].fingerprint != work[k].fingerprint for k in work)

    spec = work["episode_0000/fish"]()
    assert spec.token == "<fish>" and spec.settings["class_name"] == "fish" and spec.settings["episode"] == 0
    assert spec.inverted_latents.shape[0] == 2 and spec.null_embeddings.shape[:2] == (2, 3)


def test_non_finite_loss_names_episode_class_and_step(tiny_generator: Path, small_folder: Path):
    params = {**PARAMS, "textual_inversion": {"num_steps": 5, "learning_rate": 1e30}}
    work = specialise_classes(tiny_generator, sources.image_folder(small_folder), episode_table(small_folder), params)
    with pytest.raises(ClassSpecialisationError, match=r"episode 0, class 'fish': textual inversion: non-finite loss .* at step \d"):
        work["episode_0000/fish"]()


def test_missing_generator_folder_is_a_clear_error(small_folder: Path, tmp_path: Path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        specialise_classes(tmp_path / "no-model", sources.image_folder(small_folder), episode_table(small_folder), PARAMS)


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_classes_whose_names_differ_only_outside_ascii_get_their_own_partitions(
    tiny_generator: Path, small_folder: Path
):
    """Finding 3: 'кот' and 'собака' both became 'class': one specialisation served both labels."""
    for old, new in (("fish", "кот"), ("clock", "собака")):
        (small_folder / old).rename(small_folder / new)
    rows = []
    for label, name in enumerate(["кот", "собака"]):
        ids = sorted(p.relative_to(small_folder).as_posix() for p in (small_folder / name).glob("*.png"))[:2]
        rows += [(0, label, name, "support", i, image_id) for i, image_id in enumerate(ids)]
    episodes = pd.DataFrame(rows, columns=["episode", "label", "class_name", "role", "position", "image_id"])
    work = specialise_classes(tiny_generator, sources.image_folder(small_folder), episodes, PARAMS)
    assert len(work) == 2, sorted(work)
    specs = {key: work[key]() for key in work}
    assert {s.settings["class_name"] for s in specs.values()} == {"кот", "собака"}
    assert len({s.token for s in specs.values()}) == 2


def test_changed_support_pixels_change_the_fingerprint(tiny_generator: Path, small_folder: Path):
    """Finding 2: a support overwritten with other pixels under the same name reused the old result."""
    table = episode_table(small_folder)
    before = specialise_classes(tiny_generator, sources.image_folder(small_folder), table, PARAMS)
    victim = small_folder / table.loc[table["class_name"] == "fish", "image_id"].iloc[0]
    victim.write_bytes(next((small_folder / "house").glob("*.png")).read_bytes())
    after = specialise_classes(tiny_generator, sources.image_folder(small_folder), table, PARAMS)
    assert after["episode_0000/fish"].fingerprint != before["episode_0000/fish"].fingerprint
    assert after["episode_0000/clock"].fingerprint == before["episode_0000/clock"].fingerprint


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_classes_of_an_episode_are_specialised_together_as_they_would_be_alone(
    tiny_generator: Path, small_folder: Path
):
    images, table = sources.image_folder(small_folder), episode_table(small_folder)
    together = specialise_classes(tiny_generator, images, table, {**PARAMS, "group_size": 2})
    alone = specialise_classes(tiny_generator, images, table, {**PARAMS, "group_size": 1})
    assert {k: w.fingerprint for k, w in together.items()} == {k: w.fingerprint for k, w in alone.items()}
    for work in together.values():
        work.needed()  # what the catalog dataset does for the partitions it will compute
    grouped = {key: work() for key, work in together.items()}
    for key, spec in grouped.items():
        assert spec.settings["group_size"] == 2
        single = alone[key]()
        assert single.settings["group_size"] == 1
        assert torch.allclose(spec.token_embedding, single.token_embedding, atol=1e-5, rtol=0)
        assert torch.allclose(spec.null_embeddings, single.null_embeddings, atol=5e-2, rtol=0)


def test_precision_is_part_of_the_fingerprint_and_memory_knobs_are_not(tiny_generator: Path, small_folder: Path):
    images, table = sources.image_folder(small_folder), episode_table(small_folder)
    fp32 = specialise_classes(tiny_generator, images, table, PARAMS)
    bf16 = specialise_classes(tiny_generator, images, table, {**PARAMS, "precision": "bf16"})
    assert all(fp32[k].fingerprint != bf16[k].fingerprint for k in fp32)
    chunked = specialise_classes(tiny_generator, images, table,
                                 {**PARAMS, "group_size": 1, "null_text": {**PARAMS["null_text"], "batch_size": 1}})
    assert all(fp32[k].fingerprint == chunked[k].fingerprint for k in fp32)
