"""The Hinton KD loss against values known without it: a closed form, KL divergences of\nhand-made distributions computed in plain floats, and the T^2 scaling."""

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


def _kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) of two probability vectors, in plain floats (no torch)."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kd_loss_is_t_squared_times_the_mean_kl_from_the_teacher_to_the_student():
    # Hand-made distributions; logits T * ln(p) plus a per-row shift soften back to p at temperature T.
    temperature = 3.0
    teacher_p = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.25, 0.25, 0.5]]
    student_q = [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.25, 0.25, 0.5]]
    shifts = [0.0, 5.0, -2.0]

    def logits(rows):
        return torch.tensor([[temperature * math.log(v) + shift for v in row] for row, shift in zip(rows, shifts)],
                            dtype=torch.float64)

    forward = temperature**2 * sum(_kl(p, q) for p, q in zip(teacher_p, student_q)) / 3
    backward = temperature**2 * sum(_kl(q, p) for p, q in zip(teacher_p, student_q)) / 3
    assert forward != pytest.approx(backward, rel=1e-3), "the case tells the two directions apart"
    assert kd_loss(logits(student_q), logits(teacher_p), temperature).item() == pytest.approx(forward, rel=1e-10)
    # the teacher is the target: swapping the roles gives the other direction
    assert kd_loss(logits(teacher_p), logits(student_q), temperature).item() == pytest.approx(backward, rel=1e-10)


def test_kd_loss_scales_with_the_square_of_the_temperature():
    # Logits scaled by T and softened at T are the same distributions as the originals at T = 1.
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    student = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    at_one = kd_loss(student, teacher, 1.0).item()
    assert at_one > 0
    for temperature in (0.5, 2.0, 4.0):
        scaled = kd_loss(student * temperature, teacher * temperature, temperature).item()
        assert scaled == pytest.approx(temperature**2 * at_one, rel=1e-10)


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
