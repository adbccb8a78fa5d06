"""The synthetic-image filter (``synthesis.filter``): off, nothing changes (keys, outputs); on, the
teacher keeps only the images it assigns to their class, confidently, not blank, at most
``images_per_class`` per class, and the counts are recorded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from PIL import Image

from tint_distill.data.image_batch import ImageBatch
from tint_distill.data.sources import image_folder
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.synthetic_filter import SyntheticFilterSettings, keep_mask, passing_mask, pixel_std
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.evaluation.scoring import summary_metrics, synthetic_image_counts
from tint_distill.execution import ExecutionSettings, LocalEngine
from tint_distill.fingerprints import fingerprint, folder_fingerprint
from tint_distill.methods import REGISTRY, RealUnlabeledSettings, methods_named
from tint_distill.pipelines.distillation.nodes import label_with_teacher
from tint_distill.stages.distillation import (EpisodeData, EpisodeSource, SyntheticSelection, kept_synthetic_images,
                                              label_episode, plan_teacher_labels, train_one)
from tint_distill.stages.synthesis import SynthesisSettings, plan_generation
from tint_distill.tint.sampling import SAMPLING_VERSION
from tint_distill.work import Stored, Worker
from tests.conftest import episode_table

TEACHER = TeacherSettings(batch_size=16)
CLASSES = ("fish", "clock")


def drawings(folder: Path, name: str, start: int, stop: int) -> list[Image.Image]:
    files = sorted((folder / name).glob("*.png"))[start:stop]
    return [Image.open(f).convert("RGB").resize((32, 32)) for f in files]


def test_filter_off_keeps_the_synthesis_and_teacher_keys(tiny_generator: Path, small_folder: Path):
    """The default (oversample 1, no threshold) adds nothing to any key: the synthesis keys are those of
    the settings before the filter existed, and the teacher's those of a plan without a selection."""
    specialisations = {"episode_0000/fish": Stored("abc", dict)}
    before = {"images_per_class": 20, "alpha": 0.5, "alpha_mode": "fixed", "batch_size": 16, "seed": 0,
              "output_size": None, "device": "auto", "precision": "fp32"}  # the settings' fields before the filter

    def keys(settings: SynthesisSettings) -> dict[str, str]:
        work = plan_generation(tiny_generator, specialisations, settings, LocalEngine())
        return {key: unit.fingerprint for key, unit in work.units.items()}

    expected = fingerprint(SAMPLING_VERSION, folder_fingerprint(tiny_generator), "abc", "tint", before)
    assert keys(SynthesisSettings())["tint/episode_0000/fish"] == expected
    thresholds = SyntheticFilterSettings(min_confidence=0.5, min_pixel_std=2.0)
    assert keys(SynthesisSettings(filter=thresholds)) == keys(SynthesisSettings()), "the teacher filters, later"
    doubled = keys(SynthesisSettings(filter=SyntheticFilterSettings(oversample=2.0)))
    assert doubled == keys(SynthesisSettings(images_per_class=40)) != keys(SynthesisSettings()), \
        "what counts is how many are generated"

    images, episodes = image_folder(small_folder), episode_table(small_folder, supports=2, queries=1)
    synthetic = {f"tint/episode_0000/{name}": Stored(f"s-{name}", dict) for name in CLASSES}
    source = EpisodeSource(images, episodes, images.index, synthetic, RealUnlabeledSettings())

    def teacher_keys(synthesis: SynthesisSettings | None) -> dict[str, str]:
        work = label_with_teacher(images, episodes, images.index, synthetic, TEACHER, ["supports_only", "tint"],
                                  RealUnlabeledSettings(), None, ExecutionSettings(), synthesis)
        return {key: unit.fingerprint for key, unit in work.units.items()}

    plain = plan_teacher_labels(source, methods_named(["supports_only", "tint"]), TEACHER, LocalEngine())
    assert teacher_keys(SynthesisSettings()) == teacher_keys(None) == {k: u.fingerprint for k, u in plain.units.items()}
    on = teacher_keys(SynthesisSettings(filter=thresholds))
    assert set(on.values()).isdisjoint(teacher_keys(None).values())
    assert teacher_keys(SynthesisSettings(filter=dataclasses.replace(thresholds, min_confidence=0.6))) != on
    assert SyntheticSelection.of(methods_named(["supports_only"]), thresholds, 20) is None, "nothing to filter"


def test_the_teacher_keeps_only_the_images_it_assigns_to_their_class(small_folder: Path):
    """Real drawings as the "generated" images of two classes, some of the other class, one blank: the
    kept ones are those the teacher gives their intended class with the confidence asked, none blank,
    at most images_per_class per class; the counts reach the student's record and the summary."""
    supports = drawings(small_folder, "fish", 0, 2) + drawings(small_folder, "clock", 0, 2)
    own = drawings(small_folder, "fish", 2, 6) + drawings(small_folder, "clock", 2, 6)
    wrong = drawings(small_folder, "clock", 6, 8) + drawings(small_folder, "fish", 6, 8)  # stand for the other class
    blank = [Image.new("RGB", (32, 32), "white")]
    generated = ImageBatch.of(own[:4] + wrong[:2] + blank + own[4:] + wrong[2:])
    intended = [0] * 7 + [1] * 6
    data = EpisodeData(supports, [0, 0, 1, 1], supports, [0, 0, 1, 1], {"tint": (generated, intended)})
    settings = SyntheticFilterSettings(oversample=2.0, min_confidence=0.6, min_pixel_std=2.0)
    selection = SyntheticSelection(("tint",), settings, 3)

    worker = Worker()
    targets = label_episode(worker, TEACHER, data, selection)
    kept, logits = targets["tint.kept"], targets["tint.logits"]
    probabilities = torch.softmax(logits, 1)
    labels = torch.tensor(intended)
    passing = (probabilities.argmax(1) == labels) & (probabilities[torch.arange(13), labels] >= 0.6)
    assert kept.dtype == torch.bool and kept.shape == (13,)
    assert not kept[6], "the blank image is dropped"
    assert pixel_std(generated)[6] == 0 and (pixel_std(generated)[:6] > 2).all()
    assert (passing[kept]).all(), "every kept image is the teacher's own class, confidently"
    for label in (0, 1):
        mine = labels == label
        assert int(kept[mine].sum()) == min(3, int((passing & mine & (pixel_std(generated) >= 2)).sum()))
        first = torch.nonzero(passing & mine & (pixel_std(generated) >= 2)).squeeze(1)[:3]
        assert kept[first].all(), "the first passing images, in generation order"
    assert int(passing[labels == 0][:6].sum()) >= 3, "the real drawings mostly carry their class: a real check"
    assert not (passing[[4, 5, 11, 12]]).any(), "drawings of the other class are never their intended class"

    # the student trains on the kept images only, and its record counts them per partition
    method = REGISTRY["tint"]
    config = DistillationConfig(epochs=1, batch_size=4, image_size=32)
    student_data = data.for_student(config)
    reduced, reduced_targets, record = kept_synthetic_images(method, [(0, "fish"), (1, "clock")], 3,
                                                             student_data, targets)
    assert len(reduced.distilled["tint"][0]) == int(kept.sum()) == len(reduced_targets["tint.logits"])
    passed = targets["tint.passed"]
    assert torch.equal(passed, passing & (pixel_std(generated) >= 2)) and passed[kept].all()
    assert record["synthetic_images"] == {
        "tint/episode_0003/fish": {"generated": 7, "passed": int(passed[:7].sum()), "kept": int(kept[:7].sum())},
        "tint/episode_0003/clock": {"generated": 6, "passed": int(passed[7:].sum()), "kept": int(kept[7:].sum())}}
    assert record["n_generated"] == 13 and record["n_kept"] == int(kept.sum())
    agreement = float((logits.argmax(1) == labels).float().mean())
    assert record["teacher_agreement_on_generated"] == agreement
    result = train_one(worker, "tint", 3, StudentSettings(init="scratch"), None, config, reduced, reduced_targets,
                       record)
    assert result["n_unlabeled"] == int(kept.sum()) and result["teacher_agreement_on_unlabeled"] == 1.0
    assert result["synthetic_images"] == record["synthetic_images"]

    counts = synthetic_image_counts({"tint/episode_0003": lambda: result})
    assert counts["tint"]["generated"] == 13 and counts["tint"]["kept"] == int(kept.sum())
    summary = {"methods": {}, "comparisons": {}, "speed": {"student_speedup": 1.0}, "synthetic_images": counts}
    assert summary_metrics(summary)["filter.kept_fraction.tint"]["value"] == int(kept.sum()) / 13

    # filter off: no mask, every image kept and counted
    plain = label_episode(worker, TEACHER, data)
    assert "tint.kept" not in plain and torch.equal(plain["tint.logits"], logits)
    same, _, record = kept_synthetic_images(method, [(0, "fish"), (1, "clock")], 3, student_data, plain)
    assert same is student_data and record["n_kept"] == record["n_generated"] == 13


def test_unlabeled_task_images_are_always_kept():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    images = ImageBatch(torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8))
    intended = torch.tensor([0, 0, -1])
    passing = passing_mask(logits, intended, images, SyntheticFilterSettings(min_confidence=0.5))
    assert passing.tolist() == [True, False, True]
    assert keep_mask(passing, intended, 5).tolist() == [True, False, True]
    assert keep_mask(torch.ones(3, dtype=torch.bool), intended, 1).tolist() == [True, False, True], "one a class"

