"""Nodes of the ``distillation`` pipeline: teacher soft labels and one student per (method, episode).

What each method trains on is its entry in :mod:`tint_distill.methods`; the work itself is
planned and run by :mod:`tint_distill.stages.distillation`. The teacher is evaluated from its
query logits (``evaluation`` pipeline).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.execution import ExecutionSettings, engine_for
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings, methods_named
from tint_distill.stages import distillation as stage
from tint_distill.stages.synthesis import PreviewSettings, SynthesisSettings
from tint_distill.work import Work


def embed_candidate_images(images: ImageCollection, image_index: pd.DataFrame, teacher: TeacherSettings,
                           methods: list[str], mined_real: MinedRealSettings, execution: ExecutionSettings) -> Work | dict:
    """The teacher's features of every candidate image of ``mined_real`` (the base split), one
    partition per class, computed once and kept. Nothing when no method mines."""
    if "mined_real" not in methods:
        return {}
    return stage.plan_candidate_features(images, image_index, teacher, mined_real, engine_for(execution, "distillation"))


def mine_real_images(images: ImageCollection, image_index: pd.DataFrame, episodes: pd.DataFrame,
                     candidate_features: dict, teacher: TeacherSettings, methods: list[str],
                     mined_real: MinedRealSettings, synthetic_per_class: int) -> pd.DataFrame:
    """Per episode and class, the M candidate images nearest to its supports in the teacher's feature
    space (M: ``mined_real.images_per_class``, by default the synthetic volume), most similar first."""
    if "mined_real" not in methods:
        return pd.DataFrame(columns=stage.MINED_COLUMNS)
    count = mined_real.images_per_class or int(synthetic_per_class)
    return stage.mine(images, image_index, episodes, candidate_features, teacher, mined_real, count)


def label_with_teacher(images: ImageCollection, episodes: pd.DataFrame, image_index: pd.DataFrame,
                       synthetic_images: dict, teacher: TeacherSettings, methods: list[str],
                       real_unlabeled: RealUnlabeledSettings, mined_real_images: pd.DataFrame,
                       execution: ExecutionSettings, synthesis: SynthesisSettings | None = None,
                       unlabeled_ids: list[str] | None = None) -> Work:
    """Per episode: the prototype teacher fitted on the supports, its logits on the queries and on
    every method's images (the soft targets), and which synthetic images pass ``synthesis.filter``
    (at most ``synthesis.images_per_class`` per class), computed once and cached."""
    source = stage.EpisodeSource(images, episodes, image_index, synthetic_images, real_unlabeled, mined_real_images,
                                 tuple(unlabeled_ids or ()))
    chosen = methods_named(methods)
    synthesis = synthesis or SynthesisSettings()
    selection = stage.SyntheticSelection.of(chosen, synthesis.filter, synthesis.images_per_class)
    return stage.plan_teacher_labels(source, chosen, teacher, engine_for(execution, "distillation"), selection)


def draw_filter_preview(episodes: pd.DataFrame, synthetic_images: dict, teacher_outputs: dict, methods: list[str],
                        synthesis_preview: PreviewSettings) -> Image.Image:
    """The first episode's synthetic images the teacher kept and those it rejected, per class and method."""
    return stage.filter_preview(episodes, synthetic_images, teacher_outputs, methods_named(methods),
                                synthesis_preview.n_images, synthesis_preview.cell_size)


def train_students(images: ImageCollection, episodes: pd.DataFrame, image_index: pd.DataFrame, synthetic_images: dict,
                   teacher_outputs: dict, methods: list[str], student: StudentSettings,
                   distillation: DistillationConfig, real_unlabeled: RealUnlabeledSettings,
                   mined_real_images: pd.DataFrame, base_student: Path | None, execution: ExecutionSettings,
                   unlabeled_ids: list[str] | None = None) -> Work:
    """One student per (method, episode), from ``student.init``, trained with KD on the method's
    images plus cross-entropy on the supports and scored on the episode's queries."""
    source = stage.EpisodeSource(images, episodes, image_index, synthetic_images, real_unlabeled, mined_real_images,
                                 tuple(unlabeled_ids or ()))
    return stage.plan_students(source, teacher_outputs, methods_named(methods), student, distillation, base_student,
                               engine_for(execution, "distillation"))
