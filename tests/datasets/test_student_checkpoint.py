"""The base-class student: trained once, kept while its inputs are unchanged, never deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tint_distill.data.episodes import assign_class_splits
from tint_distill.data.sources import image_folder
from tint_distill.datasets import StudentCheckpointDataset
from tint_distill.datasets.student_checkpoint import read_checkpoint_record
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentPretrainingSettings, base_student_training, create_student
from tint_distill.pretraining.generator import pretraining_settings, split_images
from tint_distill.work import Deferred

RECIPE = {"epochs": 1, "batch_size": 16}
DISTILLATION = DistillationConfig(image_size=32)


def pretrain_base_student(images, table, recipe: dict):
    settings = StudentPretrainingSettings(**recipe)
    return base_student_training(images, table, "resnet10t_half", settings.recipe(DISTILLATION), settings.retrain)


def _base_split(embedded_root: Path, root: Path):
    for name in ("fish", "clock", "house"):
        shutil.copytree(embedded_root / name, root / name)
    images = image_folder(root)
    index = assign_class_splits(images.index, {"base": ["fish", "clock"], "val": [], "novel": ["house"]})
    settings, config, _ = pretraining_settings({"heldout_per_class": 2})
    return images, split_images(index, settings, config)


def test_base_student_trains_once_and_a_retrained_one_keeps_the_old(embedded_root: Path, tmp_path: Path):
    images, table = _base_split(embedded_root, tmp_path / "images")
    dataset = StudentCheckpointDataset(filepath=str(tmp_path / "base_student.safetensors"))
    first = pretrain_base_student(images, table, RECIPE)
    dataset.save(first)
    record = read_checkpoint_record(dataset.load())
    assert record["fingerprint"] == first.fingerprint and record["class_names"] == ["clock", "fish"]
    assert 0 <= record["heldout_accuracy"] <= 1 and record["heldout_images"] == 4
    stamp = dataset.load().stat().st_mtime_ns

    again = pretrain_base_student(images, table, RECIPE)
    assert again.fingerprint == first.fingerprint
    dataset.save(again)  # up to date: not trained, not rewritten
    assert dataset.load().stat().st_mtime_ns == stamp

    changed = pretrain_base_student(images, table, {**RECIPE, "learning_rate": 1e-3})
    assert changed.fingerprint != first.fingerprint
    dataset.save(changed)
    assert read_checkpoint_record(dataset.load())["fingerprint"] == changed.fingerprint
    kept = tmp_path / f"base_student.previous-{first.fingerprint}.safetensors"
    assert read_checkpoint_record(kept)["fingerprint"] == first.fingerprint  # the replaced one is kept
    back = pretrain_base_student(images, table, RECIPE)
    dataset.save(Deferred(back.fingerprint, lambda: pytest.fail("going back must restore, not retrain")))
    assert read_checkpoint_record(dataset.load())["fingerprint"] == first.fingerprint
    assert read_checkpoint_record(tmp_path / f"base_student.previous-{changed.fingerprint}.safetensors")
    dataset.save(Deferred(changed.fingerprint, lambda: pytest.fail("the changed one is kept too: restored")))
    assert read_checkpoint_record(dataset.load())["fingerprint"] == changed.fingerprint
    dataset.save(first)  # saved already (inside its node's clock, by NodeClock): Kedro's own save does nothing
    assert read_checkpoint_record(dataset.load())["fingerprint"] == changed.fingerprint, "not restored again"
    kept_back = tmp_path / f"base_student.previous-{first.fingerprint}.safetensors"
    kept_back.write_bytes(kept_back.read_bytes()[:100])  # a damaged kept file is not restored: trained instead
    dataset.save(pretrain_base_student(images, table, RECIPE))
    assert read_checkpoint_record(dataset.load())["fingerprint"] == first.fingerprint
    assert 0 <= read_checkpoint_record(dataset.load())["heldout_accuracy"] <= 1, "trained, not the damaged file"

    student = create_student(num_classes=5, image_size=32, pretrained_weights=dataset.load())
    from safetensors.torch import load_file

    saved = load_file(str(dataset.load()))
    trunk = [k for k in saved if not k.startswith("fc.")]
    assert trunk and all(torch.equal(student.state_dict()[k], saved[k]) for k in trunk)  # every method starts here
    assert student.fc.out_features == 5 and saved["fc.weight"].shape[0] == 2  # its own head


def test_a_run_that_needs_the_base_student_and_lacks_it_stops_before_any_work(tmp_path: Path):
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Node, Pipeline

    from tint_distill.hooks import RunGuard
    from tint_distill.params import ParameterError

    missing = StudentCheckpointDataset(filepath=str(tmp_path / "base_student.safetensors"))
    assert missing.load() is None  # a run whose students start otherwise does not need it
    pipeline = Pipeline([Node(lambda weights: weights, "base_student", "students")])
    run_params = {"env": "test", "project_path": str(tmp_path), "pipeline_names": ["distillation"]}
    for init, fails in (("base_classes", True), ("scratch", False)):
        catalog = DataCatalog({"base_student": missing, "parameters": MemoryDataset({"student": {"init": init}, "data_source": "cub"})})
        guard = RunGuard()
        if fails:  # the command to run names the run's environment and data source: it makes the student this run reads
            with pytest.raises(ParameterError, match="student_pretraining --env test --params data_source=cub`"):
                guard.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
            assert guard._run_lock is None, "stopped before the run took the project's lock"
        else:
            guard.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
            guard.on_pipeline_error(error=RuntimeError("test over"), run_params=run_params, pipeline=pipeline,
                                    catalog=catalog)
