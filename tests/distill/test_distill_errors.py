"""One error for a diverging optimisation, whichever part of the project trains."""

from __future__ import annotations

import pickle

import pytest

import tint_distill.distill as distill
import tint_distill.tint as tint
from tint_distill import errors
from tint_distill.distill import errors as distill_errors
from tint_distill.tint import errors as tint_errors


def test_every_non_finite_loss_error_is_the_one_class():
    one = errors.NonFiniteLossError
    assert tint.NonFiniteLossError is one and tint_errors.NonFiniteLossError is one
    assert distill.NonFiniteLossError is one and distill_errors.NonFiniteLossError is one
    assert issubclass(one, FloatingPointError)


@pytest.mark.parametrize("stage", sorted(errors.STAGES))
def test_the_message_names_the_stage_the_step_and_what_to_try(stage):
    error = errors.NonFiniteLossError(stage, 7, float("nan"), detail="token <c0>")
    what, advice = errors.STAGES[stage]
    assert str(error).startswith(f"{what}: non-finite loss (nan) at step 7 (token <c0>)")
    assert advice in str(error)
    again = pickle.loads(pickle.dumps(error))  # results cross processes (Ray workers)
    assert type(again) is errors.NonFiniteLossError and str(again) == str(error)
    assert (again.stage, again.step, again.detail) == (stage, 7, "token <c0>")


def test_epoch_inner_step_and_part_are_in_the_message():
    student = errors.NonFiniteLossError("student", 3, float("inf"), epoch=2)
    assert "student training: non-finite loss (inf) at epoch 2, step 3;" in str(student)
    nti = errors.NonFiniteLossError("null_text_inversion", 1, float("nan"), inner_step=4)
    assert "at step 1, inner step 4" in str(nti) and nti.inner_step == 4
    vae = errors.NonFiniteLossError("generator_pretraining", 5, float("nan"), part="VAE")
    assert str(vae).startswith("generator pre-training (VAE): non-finite loss")


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        errors.NonFiniteLossError("textual inversion", 1, float("nan"))
