"""The student: a small timm classifier, randomly initialised or from base-class weights."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import nn

from tint_distill.params import SettingError, Settings

from . import resnet12 as _resnet12  # noqa: F401 - registers 'resnet12' in timm wherever a student is built
from .distillation import DistillationConfig, accuracy, count_parameters, predict, train_student
from .errors import WeightsFileNotFoundError, WeightsMismatchError
from .weights import classifier_prefixes, load_exactly, read_state_dict, unknown_model_problem

logger = logging.getLogger(__name__)

# Named variants of timm architectures: name -> (timm name, keyword arguments).
STUDENT_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # ResNet-10-T (3-conv deep stem, avg-pool downsampling) at half width: 1.26 M parameters with
    # 5 classes, learns from a few dozen 32-64 px images from scratch, fast on CPU.
    "resnet10t_half": ("resnet10t", {"channels": (32, 64, 128, 256)}),
}
DEFAULT_STUDENT = "resnet10t_half"


class StudentWeightsNotFoundError(WeightsFileNotFoundError):
    """The student's base-class weights file does not exist."""


STUDENT_INITS = ("base_classes", "scratch", "file")


@dataclass(frozen=True)
class StudentSettings(Settings):
    """The ``student`` parameter block: the architecture, where its weights start, and which
    methods' trained students are kept (the method names are checked by :mod:`tint_distill.methods`)."""

    name: str = DEFAULT_STUDENT           # a timm model name (resnet12 included) or a preset of STUDENT_PRESETS
    init: str = "base_classes"            # base_classes (the student_pretraining pipeline's) | scratch | file
    pretrained_weights: str | None = None  # init: file: a local state dict of the same architecture
    keep_weights: tuple[str, ...] = ("tint",)  # methods whose trained students are saved (safetensors)

    def check(self) -> None:
        problem = unknown_model_problem(self.name, STUDENT_PRESETS)
        if problem:
            raise SettingError("name", problem)
        SettingError.unless_one_of("init", self.init, STUDENT_INITS)
        if (self.init == "file") != bool(self.pretrained_weights):
            raise SettingError("pretrained_weights", "is the file of init: file, and only then: set both (init: file "
                                                     f"and a state dict), or neither; got init {self.init!r} and "
                                                     f"pretrained_weights {self.pretrained_weights!r}")
        if isinstance(self.keep_weights, str):
            raise SettingError("keep_weights", f"must be a list of methods, got {self.keep_weights!r}")


def load_backbone_weights(model: nn.Module, weights_file: str | Path) -> None:
    """Load a local state dict (``.pth``/``.pt``/``.safetensors``) into ``model`` except its
    classifier head. Every non-head parameter must be present and fit."""
    path = Path(weights_file)
    if not path.is_file():
        raise StudentWeightsNotFoundError(
            str(path), "student base-class",
            "Put there the state dict of the same timm architecture trained on the base classes "
            "(torch.save(model.state_dict(), path)), or set pretrained_weights to null for random init.",
        )
    load_exactly(model, read_state_dict(path), path, f"this student ({type(model).__name__})",
                 skipped=classifier_prefixes(model))


def create_student(name: str = DEFAULT_STUDENT, num_classes: int = 5, image_size: int = 32,
                   pretrained_weights: str | Path | None = None, seed: int = 0, **model_kwargs: Any) -> nn.Module:
    """A timm classifier with ``num_classes`` outputs for ``image_size`` px inputs.

    ``name`` is a timm model name or a key of :data:`STUDENT_PRESETS` (default
    ``resnet10t_half``); ``model_kwargs`` go to ``timm.create_model`` (over the preset's).

    Random initialisation (seeded, without touching the global RNG) unless
    ``pretrained_weights`` names a local state dict of the same architecture (e.g. trained on
    the base classes); its classifier head is skipped and re-initialised. A dry forward pass at
    ``image_size`` checks that the model accepts that size. Returned in eval mode.
    """
    timm_name, preset_kwargs = STUDENT_PRESETS.get(name, (name, {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes,
                                      **{**preset_kwargs, **model_kwargs})
        except RuntimeError as error:
            raise ValueError(f"timm cannot build student '{name}': {error}") from error
    if pretrained_weights is not None:
        load_backbone_weights(model, pretrained_weights)
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(2, 3, image_size, image_size))
    except RuntimeError as error:
        raise ValueError(f"student '{name}' cannot take {image_size} px inputs: {error}") from error
    if out.shape != (2, num_classes):
        raise ValueError(f"student '{name}' gives outputs {tuple(out.shape)}, expected (2, {num_classes})")
    logger.info("student: %s, %d classes, %d px, %d parameters%s", name, num_classes, image_size,
                count_parameters(model), f", backbone from {pretrained_weights}" if pretrained_weights else "")
    return model


def rebuild_student(name: str, num_classes: int, image_size: int, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A trained student back from its saved state dict (every tensor must fit), in eval mode."""
    model = create_student(name, num_classes=num_classes, image_size=image_size)
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as error:
        raise WeightsMismatchError(
            f"saved weights do not fit student '{name}' with {num_classes} classes: {error}") from error
    return model.eval()


def pretrain_student(name: str, images: Sequence, labels: Sequence[int], config: DistillationConfig,
                     heldout_images: Sequence = (), heldout_labels: Sequence[int] = ()) -> tuple[nn.Module, dict]:
    """A student trained with cross-entropy on labelled images of other classes (the base split),
    the standard start of a few-shot learner: the same recipe and augmentation as the episode
    students (``config``), seeded by ``config.seed``. Returns the model (eval mode) and a record
    with its loss curve and its accuracy on the held-out images."""
    classes = sorted(set(int(label) for label in labels))
    if classes != list(range(len(classes))) or len(classes) < 2:
        raise ValueError(f"labels must be 0..C-1 with C >= 2 classes, got {classes[:10]}")
    model = create_student(name, num_classes=len(classes), image_size=config.image_size, seed=config.seed)
    started = time.perf_counter()
    history = train_student(model, None, None, images, labels, config)
    record = {"classes": len(classes), "images": len(images), "history": history,
              "seconds": time.perf_counter() - started, "parameters": count_parameters(model)}
    if len(heldout_images):
        record["heldout_accuracy"] = accuracy(predict(model, heldout_images, config.image_size), list(heldout_labels))
        record["heldout_images"] = len(heldout_images)
    return model, record


@dataclass(frozen=True)
class StudentPretrainingSettings(Settings):
    """The ``student_pretraining`` block: the base-class student's own epochs, batch, learning rate
    and seed; the rest of its recipe and the augmentation are the ``distillation`` block's."""

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    retrain: bool = False  # train again even when the saved checkpoint's fingerprint matches

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1, got {getattr(self, name)}")

    def recipe(self, distillation: DistillationConfig) -> DistillationConfig:
        """The episode students' recipe with this block's epochs, batch, learning rate and seed."""
        import dataclasses

        return dataclasses.replace(distillation, epochs=self.epochs, batch_size=self.batch_size,
                                   learning_rate=self.learning_rate, seed=self.seed)


def base_student_training(images: Any, pretraining_images: Any, name: str, config: DistillationConfig,
                          retrain: bool = False) -> Any:
    """Train student ``name`` on the base classes (the ``train`` images of ``pretraining_images``;
    its ``heldout`` images score it), lazily: a :class:`~tint_distill.work.Deferred` that the
    catalog runs only when the saved checkpoint's fingerprint (pixels, labels, architecture,
    recipe) differs, or with ``retrain``. ``images``: the image collection the ids refer to."""
    import dataclasses

    from tint_distill.fingerprints import fingerprint
    from tint_distill.work import Deferred

    from .distillation import DISTILLATION_VERSION

    classes = sorted(pretraining_images["class_name"].astype(str).unique())
    label_of = {c: i for i, c in enumerate(classes)}
    train = pretraining_images[pretraining_images["role"] == "train"]
    heldout = pretraining_images[pretraining_images["role"] == "heldout"]
    key = fingerprint(DISTILLATION_VERSION, name, dataclasses.asdict(config), classes,
                      list(zip(train["image_id"], train["class_name"])), images.content_hashes(train["image_id"]),
                      list(zip(heldout["image_id"], heldout["class_name"])),
                      images.content_hashes(heldout["image_id"]))

    def train_now():
        logger.info("Pre-training the %s student on %d images of %d base classes (%d epochs)", name, len(train),
                    len(classes), config.epochs)
        model, record = pretrain_student(
            name, [images.load(i) for i in train["image_id"]], [label_of[c] for c in train["class_name"]], config,
            [images.load(i) for i in heldout["image_id"]], [label_of[c] for c in heldout["class_name"]])
        logger.info("Base student: held-out accuracy %.3f on %d classes (chance %.3f), %.0f s",
                    record.get("heldout_accuracy", float("nan")), len(classes), 1 / len(classes), record["seconds"])
        record.update(fingerprint=key, student=name, class_names=classes, recipe=dataclasses.asdict(config),
                      torch=torch.__version__)
        return model.state_dict(), record

    return Deferred(key, train_now, force=retrain)


# A trained student's result (the distillation stage's) holds its state dict under WEIGHTS_KEY when
# kept; read back from its store, WEIGHTS_FILE_KEY names the file that holds it.
WEIGHTS_KEY = "weights"
WEIGHTS_FILE_KEY = "weights_file"


def load_student_weights(result: dict) -> dict[str, torch.Tensor]:
    """The state dict of a kept student (from a loaded result)."""
    from safetensors.torch import load_file

    if WEIGHTS_FILE_KEY not in result:
        raise KeyError(
            f"the {result.get('method')} student of episode {result.get('episode')} was not kept: add its method to "
            "'student.keep_weights' and rerun the distillation pipeline (or, in an experiment, set "
            "'evaluation.logged_model.method' to null)."
        )
    return load_file(result[WEIGHTS_FILE_KEY])


def load_student(result: dict, num_classes: int):
    """A kept student back as a model (eval mode), from a loaded result."""
    return rebuild_student(result["student"], num_classes, result["image_size"], load_student_weights(result))
