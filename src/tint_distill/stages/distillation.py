"""The distillation stage: the teacher's soft labels per episode, then one student per (method, episode);
and, for ``mined_real``, the teacher's features of candidate images and the images mined with them.

Each ``plan_*`` function returns :class:`~tint_distill.work.Work` whose units are keyed on what
their results depend on; the module-level functions taking a :class:`~tint_distill.work.Worker`
are what a worker runs. What a method trains on comes from its :mod:`tint_distill.methods` entry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import episode_images, images_by_episode
from tint_distill.data.grids import image_grid
from tint_distill.data.image_batch import ImageBatch
from tint_distill.distill.distillation import (DISTILLATION_VERSION, DistillationConfig, accuracy, portable_state_dict,
                                               predict, student_canvas, train_student)
from tint_distill.distill.images import Images
from tint_distill.distill.mining import nearest_to_supports
from tint_distill.distill.student import WEIGHTS_KEY, StudentSettings, create_student
from tint_distill.distill.synthetic_filter import SyntheticFilterSettings, keep_mask, kept_counts, passing_mask
from tint_distill.distill.teacher import (TEACHER_VERSION, PrototypeClassifier, TeacherSettings, extract_features,
                                          load_teacher, teacher_logits)

from tint_distill.fingerprints import file_fingerprint, fingerprint
from tint_distill.keys import PartitionKey, episode_key, slug
from tint_distill.methods import EpisodeInputs, Method, MinedRealSettings, RealUnlabeledSettings, methods_key
from tint_distill.params import ParameterError, computation_key
from tint_distill.work import Call, Engine, Stored, Unit, Work, Worker

logger = logging.getLogger(__name__)


@dataclass
class EpisodeData:
    """An episode's images as the teacher and the students see them: PIL images as loaded, or
    (:meth:`for_student`) uint8 tensors ``[N, 3, S, S]`` decoded once."""

    supports: Images
    support_labels: list[int]
    queries: Images
    query_labels: list[int]
    distilled: dict[str, tuple[Images, list[int]]]  # method -> (images, label of the class each stands for)

    def for_student(self, config: DistillationConfig) -> EpisodeData:
        """The images decoded once into what a student reads (:func:`student_canvas`): its training
        images at ``config.canvas_size``, the queries at ``config.image_size``. Compact to ship to a
        worker, and no image is decoded again while the student trains."""
        return EpisodeData(
            student_canvas(self.supports, config.canvas_size), self.support_labels,
            student_canvas(self.queries, config.image_size), self.query_labels,
            {method: (student_canvas(pictures, config.canvas_size), labels)
             for method, (pictures, labels) in self.distilled.items()})


@dataclass(frozen=True)
class EpisodeSource:
    """Everything the distillation stage reads about episodes: loads an episode's data for some
    methods and gives the fingerprint of what the teacher labels. ``unlabeled``: the task's
    unlabeled image ids (none in experiments), distilled on by every method that distils."""

    images: ImageCollection
    episodes: pd.DataFrame
    image_index: pd.DataFrame
    synthetic_images: Mapping[str, Stored]
    real_unlabeled: RealUnlabeledSettings
    mined: pd.DataFrame | None = None
    unlabeled: tuple[str, ...] = ()

    def inputs(self, episode: int) -> EpisodeInputs:
        return EpisodeInputs(self.images, self.episodes, self.image_index, episode, self.synthetic_images,
                             self.real_unlabeled, self.mined)

    def episode_numbers(self) -> list[int]:
        return sorted(int(e) for e in self.episodes["episode"].unique())

    def _rows(self, episode: int) -> pd.DataFrame:
        return self.episodes[self.episodes["episode"] == episode]

    def load(self, episode: int, methods: Sequence[Method]) -> EpisodeData:
        rows = self._rows(episode)
        supports, queries = rows[rows["role"] == "support"], rows[rows["role"] == "query"]
        extra = [self.images.load(i) for i in self.unlabeled] if any(m.images for m in methods) else []
        distilled = {}
        for method in methods:
            if method.images is None:
                continue
            pictures, labels = method.images(self.inputs(episode)).load()
            distilled[method.name] = (pictures + extra, labels + [-1] * len(extra))
        return EpisodeData(
            supports=[self.images.load(i) for i in supports["image_id"]],
            support_labels=supports["label"].astype(int).tolist(),
            queries=[self.images.load(i) for i in queries["image_id"]],
            query_labels=queries["label"].astype(int).tolist(),
            distilled=distilled,
        )

    def key(self, episode: int, methods: Sequence[Method]) -> str:
        """What the teacher's outputs for an episode depend on: the episode's images (ids and pixels)
        and what each method distils on (:func:`tint_distill.methods.methods_key`)."""
        rows = self._rows(episode)
        extra = list(zip(self.unlabeled, self.images.content_hashes(self.unlabeled))) \
            if any(m.images for m in methods) else []
        return fingerprint(rows.to_dict("list"), self.images.content_hashes(rows["image_id"]),
                           *methods_key(self.inputs(episode), methods, extra))


def _weights_key(path: str | None) -> str | None:
    return file_fingerprint(path) if path and Path(path).is_file() else path


def _absolute(settings: TeacherSettings) -> TeacherSettings:
    """The settings with the weights file as workers in other folders (Ray workers) read it."""
    path = settings.weights_file
    return dataclasses.replace(settings, weights_file=str(Path(path).resolve()) if path else path)


# --- the teacher ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSelection:
    """The synthetic-image filter as the teacher applies it: to the images of ``methods`` (those a
    synthesis sampler makes), with ``filter`` (``synthesis.filter``), at most ``images_per_class`` kept
    per class (``synthesis.images_per_class``)."""

    methods: tuple[str, ...]
    filter: SyntheticFilterSettings
    images_per_class: int

    @classmethod
    def of(cls, methods: Sequence[Method], synthetic_filter: SyntheticFilterSettings | None,
           images_per_class: int) -> SyntheticSelection | None:
        """None when nothing is filtered (the filter off, or no synthetic method): then neither the
        teacher's keys nor its outputs change."""
        filtered = tuple(m.name for m in methods if m.sampler)
        active = synthetic_filter is not None and synthetic_filter.active
        return cls(filtered, synthetic_filter, int(images_per_class)) if filtered and active else None

    def key(self) -> list:
        return [list(self.methods), self.filter.key(self.images_per_class)]


def plan_teacher_labels(source: EpisodeSource, methods: Sequence[Method], settings: TeacherSettings,
                        engine: Engine, selection: SyntheticSelection | None = None) -> Work:
    """Per episode: the prototype teacher fitted on the supports, its logits on the queries and on
    every method's images (the soft targets), and with ``selection`` which synthetic images to keep
    (``<method>.kept``); the selection's settings then join the keys."""
    weights = _weights_key(settings.weights())
    chosen = [selection.key()] if selection else []
    units = [Unit(PartitionKey(episode).format(),
                  fingerprint(TEACHER_VERSION, settings.key(), weights, source.key(episode, methods), *chosen),
                  episode)
             for episode in source.episode_numbers()]
    return Work.of(units, TeacherCall(source, tuple(methods), _absolute(settings), selection), engine)


@dataclass(frozen=True)
class TeacherCall:
    """Builds an episode's labelling :class:`Call` with its images, read here on the driver."""

    source: EpisodeSource
    methods: tuple[Method, ...]
    settings: TeacherSettings
    selection: SyntheticSelection | None = None

    def __call__(self, episodes: list[int]) -> Call:
        (episode,) = episodes
        return Call(label_episode, (self.settings, self.source.load(episode, self.methods), self.selection),
                    single=True)


def label_episode(worker: Worker, settings: TeacherSettings, data: EpisodeData,
                  selection: SyntheticSelection | None = None) -> dict[str, torch.Tensor]:
    """The teacher's logits on an episode's queries and on each method's images; with ``selection``,
    which of a filtered method's images pass its thresholds (``<method>.passed``) and which are kept
    (``<method>.kept``: the first that pass, at most ``images_per_class`` a class)."""
    backbone = worker.keep(("teacher", settings), partial(load_teacher, settings))
    worker.uses(backbone.device)
    classifier = PrototypeClassifier(temperature=settings.temperature, finetune_steps=settings.finetune_steps)
    classifier.fit(extract_features(backbone, data.supports, settings.batch_size), data.support_labels)
    outputs = {"query_logits": teacher_logits(backbone, classifier, data.queries, settings.batch_size),
               "query_labels": torch.tensor(data.query_labels)}
    for method, (pictures, labels) in data.distilled.items():
        if pictures:
            outputs[f"{method}.logits"] = teacher_logits(backbone, classifier, pictures, settings.batch_size)
            outputs[f"{method}.class_labels"] = torch.tensor(labels)
            if selection is not None and method in selection.methods:
                passed = passing_mask(outputs[f"{method}.logits"], labels, pictures, selection.filter)
                outputs[f"{method}.passed"] = passed
                outputs[f"{method}.kept"] = keep_mask(passed, labels, selection.images_per_class)
    return outputs


def filter_preview(episodes: pd.DataFrame, synthetic_images: Mapping[str, Stored],
                   teacher_outputs: Mapping[str, Stored], methods: Sequence[Method], n_images: int,
                   cell_size: int) -> Image.Image:
    """The first episode's synthetic images per class and synthetic method: a row of those the
    teacher kept (``<method>.kept``; all of them with the filter off) and a row of those it rejected,
    with how many of how many."""
    synthetic = [m for m in methods if m.sampler]
    episode = min((int(k.rsplit("_", 1)[1]) for k in teacher_outputs), default=None)
    if episode is None or not synthetic:
        return image_grid([("no synthetic method in this run", [])], cell_size=cell_size, title="synthetic filter")
    outputs = teacher_outputs[episode_key(episode)]()
    rows = []
    for (label, name), _ in episode_images(episodes, episode, "support").items():
        for method in synthetic:
            key = PartitionKey.of(episode, name, method.sampler).format()
            if key not in synthetic_images or f"{method.name}.class_labels" not in outputs:
                continue
            generated = ImageBatch.of(synthetic_images[key]())
            intended = outputs[f"{method.name}.class_labels"]
            everything = torch.ones(len(intended), dtype=torch.bool)
            kept = outputs.get(f"{method.name}.kept", everything)[intended == label].bool()
            passed = outputs.get(f"{method.name}.passed", everything)[intended == label].bool()
            kept_ids = torch.nonzero(kept).squeeze(1).tolist()
            rejected_ids = torch.nonzero(~passed).squeeze(1).tolist()
            spare = int((passed & ~kept).sum())
            which = f"{label}: {name} ({method.name.replace('textual_inversion', 'TI')})"
            rows.append((f"{which}: kept {len(kept_ids)} of {len(kept)}", [generated[i] for i in kept_ids[:n_images]]))
            rows.append((f"   rejected {len(rejected_ids)}" + (f" ({spare} passed, not needed)" if spare else ""),
                         [generated[i] for i in rejected_ids[:n_images]]))
    title = f"episode {episode}: kept / rejected by synthesis.filter"
    return image_grid(rows or [("no synthetic images", [])], cell_size=cell_size, title=title)


# --- the students --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentTask:
    method: Method
    episode: int


def student_start(settings: StudentSettings, base_student: Path | None, options: str = "",
                  where: str = "") -> str | None:
    """The weights every student starts from: the base-class student, none (scratch), or a file.
    ``options`` and ``where`` (the run's command-line options such as `` --env test --params
    data_source=cub``, the checkpoint's path) make a missing base student's error name the exact
    command and file."""
    if settings.init == "base_classes":
        if base_student is None:
            raise ParameterError(
                f"student.init is base_classes, but there is no base-class student{f' at {where}' if where else ''}: "
                f"run `kedro run --pipelines student_pretraining{options}` first (or a "
                "pipeline that includes it, such as the default), or set student.init: scratch.")
        return str(base_student)
    return settings.pretrained_weights


def plan_students(source: EpisodeSource, teacher_outputs: Mapping[str, Stored], methods: Sequence[Method],
                  student: StudentSettings, config: DistillationConfig, base_student: Path | None,
                  engine: Engine) -> Work:
    """One student per (method, episode), keyed on its settings, its start weights and its episode's
    teacher outputs (which chain on everything the method trains on)."""
    weights = student_start(student, base_student)
    kept = {k: v for k, v in dataclasses.asdict(student).items()
            if k not in ("keep_weights", "pretrained_weights")}  # the weights count by content
    weights_key, config_key = _weights_key(weights), computation_key(config)  # once, not per student
    units = []
    for episode in source.episode_numbers():
        key = PartitionKey(episode).format()
        if key not in teacher_outputs:
            raise KeyError(f"no teacher outputs for {key}: run the distillation pipeline's label_with_teacher node.")
        for method in methods:
            units.append(Unit(PartitionKey(episode, method=method.name).format(),
                              fingerprint(DISTILLATION_VERSION, method.name, kept, method.name in student.keep_weights,
                                          weights_key, config_key,
                                          teacher_outputs[key].fingerprint),
                              StudentTask(method, episode)))
    weights = str(Path(weights).resolve()) if weights else weights  # as workers in other folders read it
    return Work.of(units, StudentCall(source, teacher_outputs, student, weights, config), engine)


@dataclass(frozen=True)
class StudentCall:
    """Builds a student's training :class:`Call` with its episode's images and teacher logits."""

    source: EpisodeSource
    teacher_outputs: Mapping[str, Stored]
    student: StudentSettings
    weights: str | None
    config: DistillationConfig

    def __call__(self, tasks: list[StudentTask]) -> Call:
        (task,) = tasks
        targets = self.teacher_outputs[PartitionKey(task.episode).format()]()
        data = self.source.load(task.episode, [task.method]).for_student(self.config)
        record = {}
        if task.method.sampler and task.method.name in data.distilled:
            data, targets, record = kept_synthetic_images(task.method, self.source.inputs(task.episode).classes,
                                                          task.episode, data, targets)
        return Call(train_one, (task.method.name, task.episode, self.student, self.weights, self.config, data, targets,
                                record), single=True)


def kept_synthetic_images(method: Method, classes: Sequence[tuple[int, str]], episode: int, data: EpisodeData,
                          targets: dict[str, torch.Tensor]) -> tuple[EpisodeData, dict[str, torch.Tensor], dict]:
    """A synthetic method's images and teacher targets reduced to those the teacher kept (its
    ``<method>.kept``; all of them when the filter is off), and what to record: per synthesis
    partition (``<sampler>/episode_XXXX/<class>``) how many were generated and kept, their totals,
    and with a filter how many passed its thresholds and the teacher's agreement with the intended
    class on every generated image."""
    name, intended = method.name, targets[f"{method.name}.class_labels"]
    keep = targets.get(f"{name}.kept")
    names = dict(classes)
    counts = kept_counts(intended, keep, targets.get(f"{name}.passed"))
    partitions = {PartitionKey.of(episode, names[label], method.sampler).format(): count
                  for label, count in sorted(counts.items())}
    record = {"synthetic_images": partitions, "n_generated": sum(c["generated"] for c in counts.values()),
              "n_kept": sum(c["kept"] for c in counts.values())}
    if keep is None:
        return data, targets, record
    known = intended >= 0
    logits = targets[f"{name}.logits"]
    record["teacher_agreement_on_generated"] = float((logits.argmax(1)[known] == intended[known]).float().mean())
    pictures, labels = data.distilled[name]
    keep = keep.bool()
    data = dataclasses.replace(data, distilled={**data.distilled, name: (
        pictures[keep], [label for label, kept in zip(labels, keep.tolist()) if kept])})
    targets = {**targets, f"{name}.logits": logits[keep], f"{name}.class_labels": intended[keep]}
    return data, targets, record


def train_one(worker: Worker, method: str, episode: int, student: StudentSettings, weights: str | None,
              config: DistillationConfig, data: EpisodeData, targets: dict[str, torch.Tensor],
              record: dict | None = None) -> dict:
    """One student trained with KD on its method's images plus cross-entropy on the supports, scored
    on the queries (``record``: more to put in its result, such as the synthetic images kept). A loss
    that diverges fails this student alone (the engine saves the others)."""
    n_way = len(set(data.support_labels))
    model = create_student(student.name, num_classes=n_way, image_size=config.image_size, pretrained_weights=weights,
                           seed=config.seed + episode)
    pictures, logits = None, None
    if method in data.distilled and len(data.distilled[method][0]):
        pictures, logits = data.distilled[method][0], targets[f"{method}.logits"]
    n_unlabeled = 0 if pictures is None else len(pictures)
    logger.info("Training the %s student of episode %d on %d unlabeled images", method, episode, n_unlabeled)
    history = train_student(model, pictures, logits, data.supports, data.support_labels, config)
    worker.uses(next(model.parameters()).device)
    query_logits = predict(model, data.queries, config.image_size) if len(data.queries) else None
    agreement = None
    if pictures is not None:  # how often the teacher's label matches the class an image stands for
        intended = targets[f"{method}.class_labels"]
        known = intended >= 0  # the task's unlabeled images stand for no class
        agreement = float((logits.argmax(1)[known] == intended[known]).float().mean()) if known.any() else None
    return {
        "method": method,
        "episode": episode,
        "accuracy": accuracy(query_logits, data.query_labels) if query_logits is not None else None,
        "n_queries": len(data.query_labels),
        "query_predictions": [] if query_logits is None else query_logits.argmax(1).tolist(),
        "n_way": n_way,
        "n_unlabeled": n_unlabeled,
        "teacher_agreement_on_unlabeled": agreement,
        "history": history,
        "student": student.name,
        "image_size": config.image_size,
        **(record or {}),
        **({WEIGHTS_KEY: portable_state_dict(model)} if method in student.keep_weights else {}),
    }


# --- mined real images ---------------------------------------------------------------------------


def candidate_ids(image_index: pd.DataFrame, settings: MinedRealSettings) -> dict[str, list[str]]:
    """Per candidate class, its image ids (sorted)."""
    if "split" not in image_index.columns or not (image_index["split"] == settings.split).any():
        raise ParameterError(
            f"method 'mined_real' mines the '{settings.split}' split (parameter mined_real.split), but the image "
            "index has no image in it: pick a split that has images, or drop mined_real from 'methods'.")
    rows = image_index[image_index["split"] == settings.split]
    return {name: sorted(group["image_id"]) for name, group in rows.groupby("class_name")}


def plan_candidate_features(images: ImageCollection, image_index: pd.DataFrame, settings: TeacherSettings,
                            mined: MinedRealSettings, engine: Engine) -> Work:
    """The teacher's features of every candidate image, one unit per class (key: teacher, weights,
    ids and pixels)."""
    weights = _weights_key(settings.weights())
    units = [Unit(slug(name), fingerprint(TEACHER_VERSION, "features", settings.key(), weights, ids,
                                          images.content_hashes(ids)), tuple(ids))
             for name, ids in candidate_ids(image_index, mined).items()]
    return Work.of(units, EmbedCall(_absolute(settings), images), engine)


@dataclass(frozen=True)
class EmbedCall:
    """Builds a candidate class's embedding :class:`Call` with its images."""

    settings: TeacherSettings
    images: ImageCollection

    def __call__(self, tasks: list[tuple[str, ...]]) -> Call:
        (ids,) = tasks
        return Call(embed, (self.settings, [self.images.load(i) for i in ids]), single=True)


def embed(worker: Worker, settings: TeacherSettings, pictures: list) -> dict[str, torch.Tensor]:
    backbone = worker.keep(("teacher", settings), partial(load_teacher, settings))
    worker.uses(backbone.device)
    return {"features": extract_features(backbone, pictures, settings.batch_size)}


def _features_by_id(backbone, images: ImageCollection, image_ids, batch_size: int,
                    chunk: int = 256) -> dict[str, torch.Tensor]:
    """The teacher's features of each distinct image once (episodes share supports), decoded
    ``chunk`` images at a time."""
    distinct = sorted(set(image_ids))
    found = {}
    for start in range(0, len(distinct), chunk):
        part = distinct[start:start + chunk]
        found |= dict(zip(part, extract_features(backbone, [images.load(i) for i in part], batch_size)))
    return found


MINED_COLUMNS = ["episode", "label", "class_name", "rank", "image_id", "source_class", "similarity"]


def mine(images: ImageCollection, image_index: pd.DataFrame, episodes: pd.DataFrame,
         candidate_features: Mapping[str, Stored], settings: TeacherSettings, mined: MinedRealSettings,
         count: int) -> pd.DataFrame:
    """Per episode and class, the ``count`` candidate images nearest to its supports in the teacher's
    feature space, one row each, most similar first."""
    own = set(episodes["class_name"].astype(str))
    candidates = {name: ids for name, ids in candidate_ids(image_index, mined).items() if name not in own}
    if not candidates:
        raise ParameterError(f"mined_real.split '{mined.split}' holds only the episodes' own classes: mining them "
                             "would put their queries into the students' training data. Use the base split.")
    ids = [i for name in candidates for i in candidates[name]]
    sources = [name for name in candidates for _ in candidates[name]]
    features = torch.cat([candidate_features[slug(name)]()["features"] for name in candidates])
    supports = images_by_episode(episodes, "support")
    support_features = _features_by_id(load_teacher(settings), images,
                                       [i for classes in supports.values() for ids in classes.values() for i in ids],
                                       settings.batch_size)
    rows = []
    for episode, classes in supports.items():
        for (label, name), support_ids in classes.items():
            chosen = torch.stack([support_features[i] for i in support_ids])
            index, similarity = nearest_to_supports(chosen, features, count)
            rows += [(episode, int(label), name, rank, ids[i], sources[i], float(s))
                     for rank, (i, s) in enumerate(zip(index.tolist(), similarity.tolist()))]
    table = pd.DataFrame(rows, columns=MINED_COLUMNS)
    logger.info("Mined %d real images per class from the '%s' split (%d candidates) for %d episodes",
                count, mined.split, len(ids), table["episode"].nunique())
    return table
