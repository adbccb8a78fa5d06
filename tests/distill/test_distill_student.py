"""The student: creation, base-class weights, training on real drawings, evaluation, speed."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from tint_distill.distill.distillation import (
    DistillationConfig,
    accuracy,
    count_parameters,
    kd_loss,
    measure_throughput,
    predict,
    train_student,
)
from tint_distill.distill.errors import NonFiniteLossError, WeightsMismatchError
from tint_distill.distill.student import DEFAULT_STUDENT, StudentWeightsNotFoundError, create_student

logger = logging.getLogger(__name__)

CLASSES = ("fish", "clock", "house")
TRAIN, HELD_OUT = 12, 8  # images per class


@pytest.fixture(scope="module")
def tiny_problem(take):
    train, train_labels, held_out, held_out_labels = [], [], [], []
    for label, name in enumerate(CLASSES):
        train += take(name, 0, TRAIN)
        held_out += take(name, TRAIN, TRAIN + HELD_OUT)
        train_labels += [label] * TRAIN
        held_out_labels += [label] * HELD_OUT
    return train, train_labels, held_out, held_out_labels


def test_default_student_is_small_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = create_student(num_classes=5, image_size=32, seed=3)
    b = create_student(DEFAULT_STUDENT, num_classes=5, image_size=64, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    n = count_parameters(a)
    assert n == sum(p.numel() for p in a.parameters()) and 100_000 < n < 2_000_000
    logger.info("default student %s: %d parameters", DEFAULT_STUDENT, n)
    with torch.inference_mode():
        assert a(torch.rand(3, 3, 32, 32)).shape == (3, 5)


def test_student_from_base_class_weights_keeps_backbone_and_replaces_head(tmp_path):
    base = create_student(num_classes=10, image_size=32, seed=1)
    path = tmp_path / "base.pth"
    torch.save(base.state_dict(), path)
    student = create_student(num_classes=3, image_size=32, pretrained_weights=path, seed=2)
    base_state, state = base.state_dict(), student.state_dict()
    assert state["fc.weight"].shape == (3, base_state["fc.weight"].shape[1])
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(value, base_state[key]), key

    with pytest.raises(StudentWeightsNotFoundError, match="missing.pth"):
        create_student(num_classes=3, pretrained_weights=tmp_path / "missing.pth")
    with pytest.raises(WeightsMismatchError):
        create_student("resnet10t", num_classes=3, pretrained_weights=path)  # full-width architecture


def test_supports_only_training_learns_real_drawings(tiny_problem):
    train, train_labels, held_out, held_out_labels = tiny_problem
    student = create_student(num_classes=len(CLASSES), image_size=32)
    config = DistillationConfig(epochs=20, batch_size=18, learning_rate=3e-3, image_size=32, seed=0)
    history = train_student(student, None, None, train, train_labels, config)
    assert [r["epoch"] for r in history] == list(range(1, 21))
    assert all(r["kd_loss"] == 0.0 for r in history)
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.3 * first, f"training loss {first:.3f} -> {last:.3f}"
    assert history[-1]["lr"] < history[0]["lr"]  # cosine decay
    assert not student.training
    held_out_accuracy = accuracy(predict(student, held_out, 32), held_out_labels)
    logger.info("supports-only student: loss %.3f -> %.3f, held-out accuracy %.3f", first, last, held_out_accuracy)
    assert held_out_accuracy > 0.5, f"held-out accuracy {held_out_accuracy:.3f} (chance 0.33)"


def test_distillation_fits_soft_targets_and_is_reproducible(tiny_problem):
    train, train_labels, _, _ = tiny_problem
    # supports: 3 per class; "synthetic" images: the other 9 of each class, with soft targets
    supports = [im for i, im in enumerate(train) if i % TRAIN < 3]
    support_labels = [y for i, y in enumerate(train_labels) if i % TRAIN < 3]
    synthetic = [im for i, im in enumerate(train) if i % TRAIN >= 3]
    synthetic_labels = torch.tensor([y for i, y in enumerate(train_labels) if i % TRAIN >= 3])
    soft_targets = 3.0 * torch.nn.functional.one_hot(synthetic_labels, len(CLASSES)).float()
    config = DistillationConfig(epochs=15, batch_size=9, support_batch_size=3, learning_rate=3e-3, image_size=32,
                                temperature=2.0, seed=5)
    seen = []
    student = create_student(num_classes=len(CLASSES), image_size=32)
    before = kd_loss(predict(student, synthetic, 32), soft_targets, config.temperature).item()
    history = train_student(student, synthetic, soft_targets, supports, support_labels, config,
                            progress=lambda stage, epoch, total, record: seen.append((epoch, total)))
    assert seen == [(e, 15) for e in range(1, 16)]
    assert all(r["steps"] == 3 for r in history)
    # evaluated without augmentation, the student now matches the soft targets much better
    after = kd_loss(predict(student, synthetic, 32), soft_targets, config.temperature).item()
    logger.info("KD loss on the synthetic images: %.3f before, %.3f after training", before, after)
    assert after < 0.5 * before
    assert all(r["ce_loss"] > 0 for r in history)

    again = create_student(num_classes=len(CLASSES), image_size=32)
    short = dataclasses.replace(config, epochs=2)
    first = train_student(again, synthetic, soft_targets, supports, support_labels, short)
    again2 = create_student(num_classes=len(CLASSES), image_size=32)
    second = train_student(again2, synthetic, soft_targets, supports, support_labels, short)
    assert [r["loss"] for r in first] == [r["loss"] for r in second]


def test_non_finite_loss_names_epoch_and_step(tiny_problem):
    train, train_labels, _, _ = tiny_problem
    soft_targets = torch.zeros(6, len(CLASSES))
    soft_targets[0, 0] = float("nan")
    student = create_student(num_classes=len(CLASSES), image_size=32)
    config = DistillationConfig(epochs=1, batch_size=6, image_size=32, augmentation=False)
    with pytest.raises(NonFiniteLossError, match="student training: non-finite loss .* at epoch 1, step 1") as info:
        train_student(student, train[:6], soft_targets, train[:3], train_labels[:3], config)
    assert (info.value.stage, info.value.epoch, info.value.step) == ("student", 1, 1)
    assert isinstance(info.value, FloatingPointError) and "distillation.learning_rate" in str(info.value)


def test_a_huge_learning_rate_diverges_with_the_student_stage(tiny_problem):
    train, train_labels, _, _ = tiny_problem
    student = create_student(num_classes=len(CLASSES), image_size=32)
    config = DistillationConfig(epochs=3, batch_size=3, image_size=32, augmentation=False, learning_rate=1e30)
    with pytest.raises(NonFiniteLossError) as info:
        train_student(student, None, None, train[:6], train_labels[:6], config)
    assert info.value.stage == "student" and info.value.epoch is not None


def test_accuracy_and_predict_shapes(tiny_problem):
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]]), [0, 1, 1]) == pytest.approx(2 / 3)
    train, _, _, _ = tiny_problem
    student = create_student(num_classes=3, image_size=48)
    assert predict(student, train[:5], 48, batch_size=2).shape == (5, 3)


def test_throughput_is_a_positive_number():
    student = create_student(num_classes=5, image_size=32)
    images_per_second = measure_throughput(student, 32, batch_size=32, n_batches=3, warmup=1)
    logger.info("student throughput (1 thread, 32 px, batch 32): %.0f images/s", images_per_second)
    assert math.isfinite(images_per_second) and images_per_second > 0
