"""A user's own classification task as data: their labelled images, the k-fold splits that
estimate the accuracy without a test set, and the final training set. Plain pandas, no Kedro.

Layout of a task folder::

    root/<class>/<image>          the labelled images: N classes, K >= 1 each (K may differ)
    root/test/<class>/<image>     optional: labelled test images of the same classes
    root/unlabeled/<image>        optional: unlabeled images of the task's kind (any sub-folders)
    root/base/<class>/<image>     optional: labelled images of other classes of the same domain

The unlabeled and base images pre-train the task's own domain generator
(:mod:`tint_distill.pretraining.domain`); the base classes are not the task's classes.

The task becomes an episodes table (the same columns as sampled episodes, so every stage runs
on it unchanged):

- episode 0, the *final* model: every labelled image is a support; the test images, if any,
  are its queries;
- episodes 1..k, the *k-fold* splits (k = ``folds``, at most the largest K): the images of each
  class (sorted) are dealt round-robin to the folds, image i to fold i mod k; split f holds out
  the images of fold f as queries and keeps the others as supports. A class with fewer images
  than folds (K >= 2) has one image held out in each of its first K splits and keeps all its
  images in the others (not scored there, only competed against); a class with one image is
  never held out. Every image of a class with K >= 2 is held out exactly once.

Each split runs the whole method (specialisation, synthesis, teacher, student) on its supports,
so a held-out image never reaches the model that is scored on it. A class whose supports in a
split are all its images has the final episode's specialisation (same supports, same
fingerprint): it is computed once. Unlabeled images join every split's distillation set,
labelled by that split's teacher like the synthetic images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tint_distill.data.collection import FileReader, ImageCollection, check_decodable
from tint_distill.data.episodes import EPISODE_COLUMNS
from tint_distill.data.images import is_image_file
from tint_distill.data.sources import DataLayoutError
from tint_distill.methods import METHODS, samplers_for
from tint_distill.params import SettingError, Settings
from tint_distill.pretraining.domain import DomainGeneratorSettings
from tint_distill.keys import check_class_slugs

logger = logging.getLogger(__name__)

LABELLED, TEST = "task", "test"  # the ``split`` of a labelled and of a test image in the task's index
UNLABELED = "unlabeled"          # ... and of an unlabeled one (its class_name is empty)
BASE = "base"                    # ... and of an image of another class of the domain (base/<class>/)
FINAL_EPISODE = 0
SUPPORTS_ONLY = "supports_only"  # the student of the supports alone: always trained, the first baseline
REGISTER_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class TaskSettings(Settings):
    """The ``task`` block: the students trained per split, the one exported, the k-fold splits,
    and where the exported model goes."""

    methods: tuple[str, ...] = ("tint",)  # students trained per split (real_unlabeled, mined_real: no data here)
    export: str = "tint"                  # the method whose final student is exported
    folds: int = 3                        # k-fold splits of the estimate (k = min(folds, largest K)); 0: none
    registered_model_name: str | None = "tint_distill_task"  # MLflow Model Registry; null: logged only
    register: str = "auto"                # auto: a new version only if it beats the baselines | always | never
    baselines_to_beat: tuple[str, ...] = ("supports_only", "nn_teacher_features", "ncm_teacher_features",
                                          "nn_raw_pixels")  # the verdict's (teacher: also possible)
    speed_threads: int | None = None      # ONNX Runtime threads for the card's CPU figures; null: its default
    domain_generator: DomainGeneratorSettings = field(default_factory=DomainGeneratorSettings)  # from unlabeled/, base/

    def check(self) -> None:
        if "real_unlabeled" in self.methods:
            raise SettingError("methods", "cannot hold real_unlabeled: a task has no unlabeled real images of its "
                                          "classes (images in unlabeled/ join every other method)")
        if "mined_real" in self.methods:
            raise SettingError("methods", "cannot hold mined_real: a task has no base split of other classes to "
                                          "mine (images in unlabeled/ join every other method)")
        if not set(self.methods) & set(samplers_for(METHODS)):
            raise SettingError("methods", f"must hold a method that distils on synthetic images "
                                          f"{samplers_for(METHODS)} (supports_only, the baseline, is always "
                                          f"trained), got {list(self.methods)}")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise SettingError("methods", f"has unknown methods {unknown}; known: {list(METHODS)}")
        if self.export not in self.methods:
            raise SettingError("export", f"must be one of the task's methods {list(self.methods)}, got {self.export!r}")
        if not isinstance(self.folds, int) or self.folds < 0 or self.folds == 1:
            raise SettingError("folds", f"must be 0 (no estimate) or >= 2 (a split trains on the images of the other "
                                        f"folds), got {self.folds!r}")
        SettingError.unless_one_of("register", self.register, REGISTER_CHOICES)
        from tint_distill.evaluation.baselines import BASELINES

        unknown = sorted(set(self.baselines_to_beat) - set(BASELINES))
        if unknown or not self.baselines_to_beat:
            raise SettingError("baselines_to_beat", f"must be a non-empty list of {list(BASELINES)}, got "
                                                    f"{list(self.baselines_to_beat)}")

    def ordered_methods(self) -> list[str]:
        """The task's methods in the order results are reported."""
        return [m for m in METHODS if m in self.methods]

    def trained_methods(self) -> list[str]:
        """The students trained on every split: the task's methods and, always, ``supports_only``
        (the baseline the card compares the exported student with; it trains in seconds)."""
        return [m for m in METHODS if m in self.methods or m == SUPPORTS_ONLY]


def task_folder(root: str | Path, max_side: int | None = None, test_folder: str = "test",
                unlabeled_folder: str = "unlabeled", base_folder: str = "base") -> ImageCollection:
    """A task folder (see the module docstring) as an image collection: ``split`` is ``task`` for
    labelled images, ``test`` for test images, ``base`` for the images of other classes and
    ``unlabeled`` for unlabeled ones (with an empty class name); ids are paths relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"{root}: task folder not found; pass yours with --params task_path=/path/to/folder "
                              "(<folder>/<class>/<image>), or make an example with `kedro example-task`.")
    rows = []
    reserved = {test_folder, unlabeled_folder, base_folder}
    class_dirs = sorted(p for p in root.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and p.name not in reserved)
    if len(class_dirs) < 2:
        raise DataLayoutError(
            f"{root}: a task needs at least two class folders with labelled images (root/<class>/<image>.png), "
            f"found {len(class_dirs)}."
        )
    for split, folders in ((LABELLED, class_dirs), (TEST, _class_folders_in(root / test_folder)),
                           (BASE, _class_folders_in(root / base_folder))):
        for class_dir in folders:
            files = sorted(p for p in class_dir.iterdir() if is_image_file(p))
            if not files and split == LABELLED:
                raise DataLayoutError(f"{class_dir}: class folder '{class_dir.name}' holds no images; add at least "
                                      "one labelled image or delete the folder.")
            for file in files:
                relative = file.relative_to(root).as_posix()
                rows.append((relative, class_dir.name, split, relative))
    unlabeled = root / unlabeled_folder
    if unlabeled.is_dir():
        for file in sorted(p for p in unlabeled.rglob("*") if is_image_file(p)):
            relative = file.relative_to(root).as_posix()
            rows.append((relative, "", UNLABELED, relative))
    index = pd.DataFrame(rows, columns=["image_id", "class_name", "split", "source"])
    unknown = sorted(set(index.loc[index["split"] == TEST, "class_name"]) - {d.name for d in class_dirs})
    if unknown:
        raise DataLayoutError(
            f"{root / test_folder}: test class folder '{unknown[0]}' is not one of the task's classes "
            f"{[d.name for d in class_dirs]}; rename it or add labelled images under {root / unknown[0]}."
        )
    return ImageCollection(index, FileReader(str(root)), f"task folder {root}", max_side)


def _class_folders_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def domain_images(index: pd.DataFrame) -> pd.DataFrame:
    """The images that pre-train the task's domain generator: ``image_id`` and ``class_name`` of
    the base images (their class) and the unlabeled ones (an empty class name), never the labelled
    or test images of the task's own classes."""
    return index.loc[index["split"].isin([BASE, UNLABELED]), ["image_id", "class_name"]].reset_index(drop=True)


def unlabeled_ids(index: pd.DataFrame) -> list[str]:
    """The task's unlabeled images (none outside a task)."""
    return sorted(index.loc[index["split"] == UNLABELED, "image_id"])


def task_classes(index: pd.DataFrame) -> list[str]:
    """The task's class names in label order (sorted)."""
    return sorted(index.loc[index["split"] == LABELLED, "class_name"].unique())


def task_episodes(index: pd.DataFrame, folds: int = 3) -> pd.DataFrame:
    """The final episode and the k-fold splits (module docstring) as an episodes table."""
    classes = task_classes(index)
    labelled = {name: sorted(index.loc[(index["split"] == LABELLED) & (index["class_name"] == name), "image_id"])
                for name in classes}
    tests = {name: sorted(index.loc[(index["split"] == TEST) & (index["class_name"] == name), "image_id"])
             for name in classes}
    rows = []
    for label, name in enumerate(classes):
        rows += [(FINAL_EPISODE, label, name, "support", i, image) for i, image in enumerate(labelled[name])]
        rows += [(FINAL_EPISODE, label, name, "query", i, image) for i, image in enumerate(tests[name])]
    k = fold_count(index, folds)
    for fold in range(k):
        for label, name in enumerate(classes):
            images = labelled[name]
            held_out = [image for i, image in enumerate(images) if len(images) >= 2 and i % k == fold]
            kept = [image for image in images if image not in held_out]
            rows += [(fold + 1, label, name, "support", i, image) for i, image in enumerate(kept)]
            rows += [(fold + 1, label, name, "query", i, image) for i, image in enumerate(held_out)]
    return pd.DataFrame(rows, columns=EPISODE_COLUMNS)


def fold_count(index: pd.DataFrame, folds: int = 3) -> int:
    """How many k-fold splits the images allow: ``folds``, at most the largest K among classes with
    K >= 2 (0 when every class has one image: nothing can be held out)."""
    counts = index[index["split"] == LABELLED].groupby("class_name").size()
    possible = int(counts[counts >= 2].max()) if (counts >= 2).any() else 0
    return min(possible, folds)


def build_example_task(source: str | Path, task_root: str | Path, classes: list[str], images_per_class: int,
                       test_per_class: int = 0, predict_root: str | Path | None = None, predict_per_class: int = 0,
                       seed: int = 0, unlabeled_per_class: int = 0) -> dict[str, int]:
    """A task folder made from a class-per-folder image source (the embedded drawings, say): per
    class ``images_per_class`` labelled images, ``test_per_class`` more under ``test/``,
    ``unlabeled_per_class`` more under ``unlabeled/`` and ``predict_per_class`` more in
    ``predict_root`` (the last two without labels); all different images, seeded.
    Refuses to write into a folder that already holds files. Returns the number of files copied."""
    import shutil

    import numpy as np

    source, task_root = Path(source), Path(task_root)
    targets = [task_root] + ([Path(predict_root)] if predict_root else [])
    for target in targets:
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target} already holds files; choose another folder (nothing was written).")
    needed = images_per_class + test_per_class + predict_per_class + unlabeled_per_class
    chosen = {}
    for name in classes:
        files = sorted(p for p in (source / name).glob("*") if is_image_file(p)) if (source / name).is_dir() else []
        if len(files) < needed:
            raise DataLayoutError(f"{source / name}: {len(files)} images, but {needed} are needed; pick another class.")
        rng = np.random.default_rng([seed, *name.encode()])
        chosen[name] = [files[i] for i in rng.permutation(len(files))[:needed]]
    copied = {"labelled": 0, "test": 0, "unlabeled": 0, "predict": 0}
    for name, files in chosen.items():
        ends = np.cumsum([images_per_class, test_per_class, unlabeled_per_class, predict_per_class])
        parts = (("labelled", task_root / name, files[:ends[0]]),
                 ("test", task_root / "test" / name, files[ends[0]:ends[1]]),
                 ("unlabeled", task_root / "unlabeled", files[ends[1]:ends[2]]),
                 ("predict", Path(predict_root) if predict_root else None, files[ends[2]:ends[3]]))
        for kind, folder, group in parts:
            if folder is None or not group:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            for file in group:
                target = folder / (f"{name}_{file.name}" if kind in ("predict", "unlabeled") else file.name)
                shutil.copy2(file, target)
                copied[kind] += 1
    return copied


def describe_task(index: pd.DataFrame, episodes: pd.DataFrame) -> dict:
    """The task in numbers: classes, labelled images per class, test and unlabeled images, splits."""
    labelled = index[index["split"] == LABELLED]
    counts = labelled.groupby("class_name").size()
    return {
        "classes": task_classes(index),
        "images_per_class": {name: int(n) for name, n in counts.items()},
        "test_images": int((index["split"] == TEST).sum()),
        "unlabeled_images": int((index["split"] == UNLABELED).sum()),
        "base_images": int((index["split"] == BASE).sum()),
        "base_classes": sorted(index.loc[index["split"] == BASE, "class_name"].unique()),
        "folds": int(episodes["episode"].max()),
        "scored_classes": sorted(counts[counts >= 2].index),
    }


def prepare_task(images: ImageCollection, settings: TaskSettings, keep_weights: tuple[str, ...],
                 min_image_side: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The task's image index, episodes table and :func:`describe_task` report, after every image
    has been decoded: all the unreadable and too small files are listed at once (the experiment's
    own check), before any work starts. The exported method's students must be kept
    (``keep_weights``, from ``student.keep_weights``)."""
    if settings.export not in keep_weights:
        raise SettingError("keep_weights", f"must include the exported method '{settings.export}' for a task run "
                                           "(parameter 'student.keep_weights')")
    check_class_slugs(images.index.loc[images.index["split"] == LABELLED, "class_name"].unique())
    check_decodable(images, images.index["image_id"], min_image_side)
    index = images.index.copy()
    episodes = task_episodes(index, settings.folds)
    report = describe_task(index, episodes)
    logger.info("Task: %d classes %s, images per class %s, %d test images, %d unlabeled images, %d base images "
                "(%d classes), %d folds", len(report["classes"]), report["classes"], report["images_per_class"],
                report["test_images"], report["unlabeled_images"], report["base_images"],
                len(report["base_classes"]), report["folds"])
    if not report["folds"]:
        logger.warning("No k-fold estimate of the accuracy: %s.", "task.folds is 0" if not settings.folds else
                       "every class has a single labelled image")
    return index, episodes, report
