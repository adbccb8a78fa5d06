"""Nodes of the ``student_pretraining`` pipeline: a student trained on the base classes, whose
backbone initialises every method's student (``student.init: base_classes``); the work:
:func:`tint_distill.distill.student.base_student_training`."""

from __future__ import annotations

import pandas as pd

from tint_distill.data.collection import ImageCollection
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentPretrainingSettings, StudentSettings, base_student_training
from tint_distill.work import Deferred


def pretrain_base_student(raw_images: ImageCollection, pretraining_images: pd.DataFrame,
                          student_pretraining: StudentPretrainingSettings, student: StudentSettings,
                          distillation: DistillationConfig) -> Deferred:
    """Train the student architecture on the base classes with the episode students' recipe and
    augmentation (``distillation``) but ``student_pretraining``'s epochs, batch, learning rate and
    seed. Lazy: the catalog trains only when the saved checkpoint's fingerprint differs, or with
    ``retrain``."""
    return base_student_training(raw_images, pretraining_images, student.name, student_pretraining.recipe(distillation),
                                 retrain=student_pretraining.retrain)
