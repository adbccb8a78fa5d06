"""The task's own domain generator: pre-trained on the task folder's unlabeled/ and base/ images into
the task's model folder, reused while its images and settings are the same, used (with its words)
by the specialisations; without such images the card names the experiment's generator and what to add."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tint_distill.data.task import TaskSettings, build_example_task, domain_images, task_folder
from tint_distill.datasets import DiffusersModelDataset
from tint_distill.evaluation.reports import generator_lines
from tint_distill.pipelines.task import nodes
from tint_distill.pretraining.domain import DomainGeneratorSettings
from tint_distill.stages.inversion import InversionSettings
from tint_distill.tint.models import read_training_record
from tint_distill.work import NoModel

TINY = {"vae_steps": 2, "vae_batch_size": 4, "unet_steps": 2, "unet_batch_size": 4, "warmup_steps": 1,
        "latent_augmentations": 1, "log_every": 1}


def _settings(**changes) -> TaskSettings:
    return TaskSettings(domain_generator=DomainGeneratorSettings(device="cpu", training=TINY, **changes))


@pytest.fixture
def task_root(tmp_path: Path, embedded_root: Path) -> Path:
    """fish and clock, 2 labelled each, 3 unlabeled each, and a base class (house, 3 images)."""
    root = tmp_path / "task"
    build_example_task(embedded_root, root, ["fish", "clock"], 2, unlabeled_per_class=3)
    (root / "base" / "house").mkdir(parents=True)
    for file in sorted((embedded_root / "house").glob("*.png"))[:3]:
        shutil.copy(file, root / "base" / "house" / file.name)
    return root


def test_base_folder_is_not_a_task_class_and_with_unlabeled_images_trains_the_generator(task_root):
    index = task_folder(task_root).index
    assert sorted(index.loc[index["split"] == "task", "class_name"].unique()) == ["clock", "fish"]
    rows = domain_images(index)
    assert sorted(rows["class_name"].unique()) == ["", "house"] and len(rows) == 9  # never a labelled image
    assert not set(rows["image_id"]) & set(index.loc[index["split"] == "task", "image_id"])


def test_domain_generator_is_trained_in_the_task_folder_reused_and_used_with_its_words(task_root, tiny_generator,
                                                                                       tmp_path, caplog):
    images = task_folder(task_root)
    task = _settings()
    store = DiffusersModelDataset(path=str(tmp_path / "06_models" / "task" / "generator"), optional=True,
                                  retrain_parameter="task.domain_generator.retrain")
    assert store.load() is None

    plan, described = nodes.pretrain_domain_generator(images, images.index, tiny_generator, task)
    expected = described["fingerprint"]
    store.save(plan)
    trained = store.load()
    record = read_training_record(trained)
    assert record["fingerprint"] == expected and record["training_images"] == 9
    assert record["history"]["classes"] == ["a photo", "a photo of a house"]
    assert record["history"]["started_from"] == str(tiny_generator)

    again, same = nodes.pretrain_domain_generator(images, images.index, tiny_generator, task)
    same = same["fingerprint"]
    with caplog.at_level(logging.INFO):
        store.save(again)
    assert same == expected and "is up to date" in caplog.text and "task.domain_generator.retrain" in caplog.text

    other, changed = nodes.pretrain_domain_generator(images, images.index, tiny_generator,
                                                     _settings(unlabeled_prompt="a drawing"))
    assert changed["fingerprint"] != expected  # other words: another model

    generator, inversion, description = nodes.choose_generator(tiny_generator, trained, described, task,
                                                               InversionSettings())
    assert generator == trained and inversion.textual_inversion.prompt_template == "a photo of a {token}"
    assert description["kind"] == "domain" and description["training_images"] == 9
    assert expected in description["summary"] and description["seconds"] > 0
    assert not any("To do better" in line for line in generator_lines(description))


def test_without_unlabeled_images_the_card_names_the_experiment_generator_and_what_to_add(tmp_path, embedded_root,
                                                                                        tiny_generator):
    root = tmp_path / "task"
    build_example_task(embedded_root, root, ["fish", "clock"], 2)
    images = task_folder(root)
    plan, described = nodes.pretrain_domain_generator(images, images.index, tiny_generator, _settings())
    assert isinstance(plan, NoModel) and described == {"fingerprint": None, "none_because": plan.why}
    store = DiffusersModelDataset(path=str(tmp_path / "generator"), optional=True)
    store.save(plan)
    assert store.load() is None, "no model is written"
    inversion = InversionSettings()
    generator, words, description = nodes.choose_generator(tiny_generator, store.load(), described, _settings(),
                                                           inversion)
    assert generator == tiny_generator and words == inversion
    card = "\n".join(generator_lines(description))
    assert "## Generator" in card and str(tiny_generator) in card
    assert "unlabeled/" in card and "sd_model_path" in card


def test_the_task_specialises_and_samples_the_generator_choose_generator_gives():
    from tint_distill.pipeline_registry import register_pipelines

    nodes_by_name = {node.name: node for node in register_pipelines()["task"].nodes}
    specialise = nodes_by_name["task.inversion.specialise_classes"]
    assert specialise.inputs[0] == "task.generator_for_task" and "task.inversion_settings" in specialise.inputs
    assert nodes_by_name["task.synthesis.generate_synthetic_images"].inputs[0] == "task.generator_for_task"
    assert set(nodes_by_name["task.generator.choose_generator"].outputs) >= {"task.generator_for_task",
                                                                             "task.inversion_settings"}
