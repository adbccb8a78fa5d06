"""Errors shared by every part of the project (no Kedro, no torch: importable from anywhere).

A mistake in what a user gave (parameters, folders, files, a busy project, outputs of a pipeline
not run yet) is a :class:`UserInputError`: its message says what is wrong and what to do, and
``kedro run`` prints that message alone (``cli.py``). Anything else is a bug and keeps its traceback.

A diverging optimisation is signalled one way, whatever trains: :class:`NonFiniteLossError`,
a :class:`FloatingPointError` that names the stage, the step and what to try.
"""

from __future__ import annotations

class UserInputError(Exception):
    """Base of every error caused by what the user gave rather than by the code: its message is the
    whole story (what is wrong, where, what to do), so the command line shows it without traceback.
    ``where_to_look`` says where such mistakes are made (printed under the message)."""

    where_to_look = ""


def user_input_error(error: BaseException) -> UserInputError | None:
    """The :class:`UserInputError` behind ``error``: itself or the first one down its chain of explicit
    causes (``raise ... from``: Kedro wraps a dataset's error in its ``DatasetError`` so), else None. A
    bug raised while handling a user's mistake (an implicit ``__context__``) stays a bug."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserInputError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


class PriorOutputMissingError(UserInputError):
    """A run reads an output that another pipeline makes, and that pipeline has not run yet (``predict``
    before any ``task``): the message gives the command that makes it."""


# stage -> (what diverged, in words; what to try). The stage names are the project's words for
# its optimisations; the advice names the parameters that set them.
STAGES: dict[str, tuple[str, str]] = {
    "textual_inversion": (
        "textual inversion",
        "lower inversion.textual_inversion.learning_rate; check the support images (NaN/inf?) and the "
        "generator's weights (in fp16, an overflow: try inversion.precision bf16 or fp32)"),
    "null_text_inversion": (
        "null-text inversion",
        "lower inversion.null_text.learning_rate or guidance_scale; check the support images (NaN/inf?) and "
        "the generator's weights (in fp16, an overflow: try inversion.precision bf16 or fp32)"),
    "student": (
        "student training",
        "lower distillation.learning_rate; check the teacher logits (NaN/inf?) and the input images"),
    "teacher_finetune": (
        "teacher head fine-tuning",
        "lower the fine-tuning learning rate or set teacher.finetune_steps to 0; check the support "
        "features (NaN/inf?)"),
    "generator_pretraining": (
        "generator pre-training",
        "lower generator_pretraining.training.vae_learning_rate / unet_learning_rate; check the "
        "training images (NaN/inf?)"),
}


class NonFiniteLossError(FloatingPointError):
    """An optimisation produced a NaN/inf loss.

    ``stage`` is one of :data:`STAGES` (``textual_inversion``, ``null_text_inversion``,
    ``student``, ``teacher_finetune``, ``generator_pretraining``); ``step`` is the 1-based step
    (textual inversion: TI step; null-text inversion: timestep index; student: step within
    ``epoch``); ``inner_step`` the 1-based inner step of null-text inversion and ``epoch`` the
    1-based epoch of student training (``None`` elsewhere); ``loss`` the non-finite value.
    ``part`` names a part of the stage (e.g. "VAE", "UNet"), ``detail`` what failed (a token,
    a support, the loss terms).
    """

    def __init__(self, stage: str, step: int, loss: float, *, epoch: int | None = None,
                 inner_step: int | None = None, part: str = "", detail: str = "") -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
        self.stage, self.step, self.loss = stage, step, loss
        self.epoch, self.inner_step, self.part, self.detail = epoch, inner_step, part, detail
        what, advice = STAGES[stage]
        if part:
            what = f"{what} ({part})"
        where = (f"epoch {epoch}, " if epoch is not None else "") + f"step {step}"
        if inner_step is not None:
            where += f", inner step {inner_step}"
        message = f"{what}: non-finite loss ({loss}) at {where}"
        if detail:
            message += f" ({detail})"
        super().__init__(f"{message}; the optimisation diverged: {advice}")

    def __reduce__(self):  # picklable (e.g. across Ray workers) although __init__ takes keywords; notes kept
        return (_rebuild, (self.stage, self.step, self.loss, self.epoch, self.inner_step, self.part, self.detail),
                self.__dict__)


def _rebuild(stage, step, loss, epoch, inner_step, part, detail) -> NonFiniteLossError:
    return NonFiniteLossError(stage, step, loss, epoch=epoch, inner_step=inner_step, part=part, detail=detail)
