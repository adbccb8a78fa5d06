"""Errors shared by every part of the project (no Kedro, no torch: importable from anywhere).

A diverging optimisation is signalled one way, whatever trains: :class:`NonFiniteLossError`,
a :class:`FloatingPointError` that names the stage, the step and what to try.
"""

from __future__ import annotations

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
