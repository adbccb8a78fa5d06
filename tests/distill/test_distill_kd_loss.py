"""The Hinton KD loss against hand arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from tint_distill.distill.distillation import kd_loss


def test_kd_loss_matches_a_hand_computed_case():
    # Temperature T = 2, two classes, two samples. Logits are chosen so that the softened
    # distributions are simple fractions:
    #   teacher sample 1: [0, 0] / 2          -> p1 = [1/2, 1/2]
    #   teacher sample 2: [2 ln 3, 0] / 2     -> [ln 3, 0] -> p2 = [3/4, 1/4]
    #   student sample 1: [2 ln 3, 0] / 2     -> q1 = [3/4, 1/4]
    #   student sample 2: [0, 0] / 2          -> q2 = [1/2, 1/2]
    # KL(p1 || q1) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    # KL(p2 || q2) = 3/4 ln((3/4)/(1/2)) + 1/4 ln((1/4)/(1/2)) = 3/4 ln(3/2) - 1/4 ln 2 = 3/4 ln 3 - ln 2
    # batchmean: (KL1 + KL2) / 2; times T^2 = 4:
    #   2 * (1/2 ln(4/3) + 3/4 ln 3 - ln 2) = ln 4 - ln 3 + 3/2 ln 3 - 2 ln 2 = 1/2 ln 3
    ln3 = math.log(3.0)
    teacher = torch.tensor([[0.0, 0.0], [2 * ln3, 0.0]], dtype=torch.float64)
    student = torch.tensor([[2 * ln3, 0.0], [0.0, 0.0]], dtype=torch.float64)
    expected = 0.5 * ln3
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-12)
    # per-sample terms, as written above
    kl1, kl2 = 0.5 * math.log(4 / 3), 0.75 * ln3 - math.log(2)
    assert expected == pytest.approx(4 * (kl1 + kl2) / 2, rel=1e-12)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(8, 5, generator=generator)
    assert kd_loss(teacher.clone(), teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # softmax ignores a per-row shift
    assert kd_loss(teacher + 3.0, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(8, 5, generator=generator)
    for temperature in (1.0, 4.0, 10.0):
        assert kd_loss(student, teacher, temperature).item() > 1e-4


def test_kd_loss_gradient_reaches_only_the_student():
    teacher = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    student = torch.zeros(1, 3, requires_grad=True)
    kd_loss(student, teacher, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    # gradient of T^2 KL w.r.t. student logits is T (q - p): it sums to zero over classes
    assert student.grad.sum().item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 2.0)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
