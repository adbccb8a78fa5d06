"""Nodes of the ``student_pretraining`` pipeline: a student trained on the base classes, whose
backbone initialises every method's student (``student.init: base_classes``)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import pandas as pd
import torch

from tint_distill.data.collection import ImageCollection
from tint_distill.distill.distillation import DISTILLATION_VERSION
from tint_distill.distill.student import pretrain_student
from tint_distill.params import SettingError, Settings, settings_from_params
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings, create_teacher as load_teacher
from tint_distill.methods import METHODS, parse_methods
from tint_distill.params import settings_from_params as settings_from_params
from tint_distill.fingerprints import fingerprint
from tint_distill.work import Deferred

logger = logging.getLogger(__name__)


def parse_distillation(block):
    return settings_from_params(DistillationConfig, block, "distillation")


def parse_student(block):
    return settings_from_params(StudentSettings, block, "student")


def parse_teacher(block):
    return settings_from_params(TeacherSettings, block, "teacher")



@dataclass(frozen=True)
class StudentPretrainingSettings(Settings):
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    retrain: bool = False  # train again even when the saved checkpoint's fingerprint matches

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1, got {getattr(self, name)}")


def parse_settings(student_pretraining: dict) -> StudentPretrainingSettings:
    return settings_from_params(StudentPretrainingSettings, student_pretraining, "student_pretraining")


def pretrain_base_student(raw_images: ImageCollection, pretraining_images: pd.DataFrame, student_pretraining: dict,
                          student: dict, distillation: dict) -> Deferred:
    """Train the student architecture on the base classes (the generator's ``train`` images; its
    ``heldout`` images score it), with the episode students' recipe and augmentation
    (``distillation``) but ``student_pretraining``'s epochs, batch, learning rate and seed. Lazy:
    the catalog trains only when the saved checkpoint's fingerprint (pixels, labels, architecture,
    recipe) differs, or with ``retrain``."""
    settings = parse_settings(student_pretraining)
    name = parse_student(student).name
    config = dataclasses.replace(parse_distillation(distillation), epochs=settings.epochs,
                                 batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                                 seed=settings.seed)
    classes = sorted(pretraining_images["class_name"].astype(str).unique())
    label_of = {c: i for i, c in enumerate(classes)}
    train = pretraining_images[pretraining_images["role"] == "train"]
    heldout = pretraining_images[pretraining_images["role"] == "heldout"]
    key = fingerprint(DISTILLATION_VERSION, name, dataclasses.asdict(config), classes,
                      list(zip(train["image_id"], train["class_name"])), raw_images.content_hashes(train["image_id"]),
                      list(zip(heldout["image_id"], heldout["class_name"])),
                      raw_images.content_hashes(heldout["image_id"]))

    def train_now():
        logger.info("Pre-training the %s student on %d images of %d base classes (%d epochs)", name, len(train),
                    len(classes), config.epochs)
        model, record = pretrain_student(
            name, [raw_images.load(i) for i in train["image_id"]], [label_of[c] for c in train["class_name"]], config,
            [raw_images.load(i) for i in heldout["image_id"]], [label_of[c] for c in heldout["class_name"]])
        logger.info("Base student: held-out accuracy %.3f on %d classes (chance %.3f), %.0f s",
                    record.get("heldout_accuracy", float("nan")), len(classes), 1 / len(classes), record["seconds"])
        record.update(fingerprint=key, student=name, class_names=classes, recipe=dataclasses.asdict(config),
                      torch=torch.__version__)
        return model.state_dict(), record

    return Deferred(key, train_now, force=settings.retrain)
