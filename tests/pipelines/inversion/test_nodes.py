from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from tint_distill.data import sources
from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.execution import ExecutionSettings, LocalEngine, RayEngine
from tint_distill.keys import PartitionKey
from tint_distill.pipelines.inversion.nodes import specialise_classes
from tint_distill.stages.inversion import InversionSettings, class_token
from tint_distill.tint import ModelFolderError, NonFiniteLossError
from tint_distill.work import UnitFailed, Work

from tests.conftest import episode_table



PARAMS = {"device": "cpu", "textual_inversion": {"num_steps": 3}, "null_text": {"num_steps": 3, "inner_steps": 2}}
LOCAL = ExecutionSettings()


def inversion(**changes) -> InversionSettings:
    """The ``inversion`` block as Kedro gives it to the node (typed: ``InversionSettings(**block)``)."""
    return InversionSettings(**{**PARAMS, **changes})


def specialise(generator: Path, folder: Path, table: pd.DataFrame, **changes) -> Work:
    return specialise_classes(generator, sources.image_folder(folder), table, inversion(**changes), LOCAL)


def fingerprints(work: Work) -> dict[str, str]:
    return {key: unit.fingerprint for key, unit in work.units.items()}


def computed(work: Work) -> dict:
    """Every unit of ``work`` computed by its engine, as the catalog dataset asks for them:
    ``{key: result}``, a unit's own failure as its result."""
    return {o.key: o.error if o.error is not None else o.value
            for o in work.engine.run(work, list(work.units.values()))}


def test_specialisation_per_class_is_planned_and_fingerprinted(tiny_generator: Path, small_folder: Path):
    work = specialise(tiny_generator, small_folder, episode_table(small_folder))
    assert sorted(work.units) == ["episode_0000/clock", "episode_0000/fish"]
    assert isinstance(work.engine, LocalEngine) and work.group_size == 5
    again = specialise(tiny_generator, small_folder, episode_table(small_folder))
    assert fingerprints(work) == fingerprints(again)
    changed = specialise(tiny_generator, small_folder, episode_table(small_folder), textual_inversion={"num_steps": 4})
    assert all(changed.units[k].fingerprint != work.units[k].fingerprint for k in work.units)

    spec = computed(work)["episode_0000/fish"]
    assert spec.token == "<fish>" and spec.diagnostics["class_name"] == "fish" and spec.diagnostics["episode"] == 0
    assert spec.inverted_latents.shape[0] == 2 and spec.null_embeddings.shape[:2] == (2, 3)


def test_non_finite_loss_names_episode_class_and_step(tiny_generator: Path, small_folder: Path, tmp_path: Path):
    """A diverging class is its NonFiniteLossError (a unit failure, naming episode, class and step);
    the store reports the failed partitions after saving the others, and keeps nothing of them."""
    table = episode_table(small_folder)
    work = specialise(tiny_generator, small_folder, table, textual_inversion={"num_steps": 5, "learning_rate": 1e30})
    failed = computed(work)["episode_0000/fish"]
    assert isinstance(failed, NonFiniteLossError) and isinstance(failed, FloatingPointError)
    assert failed.stage == "textual_inversion" and failed.step >= 1
    described = "\n".join([str(failed), *getattr(failed, "__notes__", [])])
    assert "episode 0, class 'fish'" in described and "textual inversion: non-finite loss" in described
    assert f"at step {failed.step}" in str(failed)

    store = ResumablePartitionedDataset(path=str(tmp_path / "specialisations"),
                                        dataset="tint_distill.datasets.SpecialisationDataset",
                                        filename_suffix=".safetensors")
    work = specialise(tiny_generator, small_folder, table, textual_inversion={"num_steps": 5, "learning_rate": 1e30})
    with pytest.raises(DatasetError, match=r"partitions .* failed \(.*episode_0000/fish.*\).*textual inversion: "
                                           r"non-finite loss .* at step \d") as raised:
        store.save(work)
    assert isinstance(raised.value.__cause__, UnitFailed)
    assert not list((tmp_path / "specialisations").rglob("*.done")), "nothing diverged is kept"


def test_missing_generator_folder_is_a_clear_error(small_folder: Path, tmp_path: Path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        specialise(tmp_path / "no-model", small_folder, episode_table(small_folder))


def test_the_node_runs_its_units_on_the_engine_the_execution_block_names(tiny_generator: Path, small_folder: Path):
    execution = ExecutionSettings(engine="ray", stages={"inversion": {"gpus_per_unit": 1, "max_workers": 3}})
    work = specialise_classes(tiny_generator, sources.image_folder(small_folder), episode_table(small_folder),
                              inversion(), execution)
    assert isinstance(work.engine, RayEngine)  # not started: Ray starts at the first group it runs
    assert work.engine.settings.gpus_per_unit == 1 and work.engine.settings.max_workers == 3, "the stage's own"
    assert fingerprints(work) == fingerprints(specialise(tiny_generator, small_folder, episode_table(small_folder))), (
        "where a unit runs is not part of what it is")


def test_a_class_in_several_episodes_never_shares_a_group_with_itself(tiny_generator: Path, small_folder: Path):
    work = specialise(tiny_generator, small_folder, episode_table(small_folder, episodes=(0, 1, 2)), group_size=4)
    groups = work.groups([work.units[key] for key in sorted(work.units)])  # the pending units, as the store asks
    assert [[u.key for u in g] for g in groups] == [
        ["episode_0000/clock", "episode_0000/fish"], ["episode_0001/clock", "episode_0001/fish"],
        ["episode_0002/clock", "episode_0002/fish"]], "one token per class: one class per group"
    assert all(len({class_token(u.task.class_name) for u in g}) == len(g) for g in groups)
    assert all(u.key == PartitionKey.of(u.task.episode, u.task.class_name).format() for u in work.units.values())


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
    work = specialise_classes(tiny_generator, sources.image_folder(small_folder), episodes, inversion(), LOCAL)
    assert len(work.units) == 2, sorted(work.units)
    assert sorted(work.units) == sorted(PartitionKey.of(0, name).format() for name in ("кот", "собака"))
    specs = computed(work)
    assert {s.diagnostics["class_name"] for s in specs.values()} == {"кот", "собака"}
    assert len({s.token for s in specs.values()}) == 2
    for key, spec in specs.items():
        assert PartitionKey.parse(key) == PartitionKey.of(0, spec.diagnostics["class_name"]), "each under its own key"


def test_changed_support_pixels_change_the_fingerprint(tiny_generator: Path, small_folder: Path):
    """Finding 2: a support overwritten with other pixels under the same name reused the old result."""
    table = episode_table(small_folder)
    before = specialise(tiny_generator, small_folder, table)
    victim = small_folder / table.loc[table["class_name"] == "fish", "image_id"].iloc[0]
    victim.write_bytes(next((small_folder / "house").glob("*.png")).read_bytes())
    after = specialise(tiny_generator, small_folder, table)
    assert after.units["episode_0000/fish"].fingerprint != before.units["episode_0000/fish"].fingerprint
    assert after.units["episode_0000/clock"].fingerprint == before.units["episode_0000/clock"].fingerprint


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_classes_of_an_episode_are_specialised_together_as_they_would_be_alone(
    tiny_generator: Path, small_folder: Path
):
    table = episode_table(small_folder)
    together = specialise(tiny_generator, small_folder, table, group_size=2)
    alone = specialise(tiny_generator, small_folder, table, group_size=1)
    assert fingerprints(together) == fingerprints(alone)
    assert [len(g) for g in together.groups(list(together.units.values()))] == [2]
    assert [len(g) for g in alone.groups(list(alone.units.values()))] == [1, 1]
    grouped, single = computed(together), computed(alone)
    for key, spec in grouped.items():
        assert spec.diagnostics["group_size"] == 2
        assert single[key].diagnostics["group_size"] == 1
        assert torch.allclose(spec.token_embedding, single[key].token_embedding, atol=1e-5, rtol=0)
        assert torch.allclose(spec.null_embeddings, single[key].null_embeddings, atol=5e-2, rtol=0)


def test_precision_is_part_of_the_fingerprint_and_memory_knobs_are_not(tiny_generator: Path, small_folder: Path):
    table = episode_table(small_folder)
    fp32 = specialise(tiny_generator, small_folder, table)
    bf16 = specialise(tiny_generator, small_folder, table, precision="bf16")
    assert all(fp32.units[k].fingerprint != bf16.units[k].fingerprint for k in fp32.units)
    chunked = specialise(tiny_generator, small_folder, table, group_size=1,
                         null_text={**PARAMS["null_text"], "batch_size": 1})
    assert fingerprints(fp32) == fingerprints(chunked)
