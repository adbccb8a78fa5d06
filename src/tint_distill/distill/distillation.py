"""Knowledge distillation of the teacher's soft labels into a small student, and its evaluation.

Loss per step (Hinton et al. 2015):

    kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))   on synthetic images
  + ce_weight * cross-entropy(student, label)                            on support images

Batching: an epoch is one pass over the synthetic images in shuffled batches of
``batch_size``. The supports are *oversampled*: every batch also carries
``support_batch_size`` supports, taken in turn from a reshuffled cycle over all supports, so
each support is seen equally often (within one) and every step has both loss terms. Both parts
go through the student in one forward pass. With no synthetic images (the "supports_only"
method) an epoch is one pass over the supports and the loss is cross-entropy only.

Augmentation (train only): random resized crop (area fraction ``crop_scale``, aspect ratio in
[3/4, 4/3]) to ``image_size`` plus horizontal flip with probability 1/2. Crop boxes and flips
come from a seeded CPU ``torch.Generator``; the crops are resampled for the whole batch at once
on the student's device (:func:`augment`: antialiased bilinear, as ``torchvision``'s
``resized_crop(antialias=True)``, written as two batched matrix products, the flip folded into
them). Images are decoded and resized once per student, before training (:func:`student_canvas`:
a uint8 ``[N, 3, S, S]`` tensor, ``S = 2 * image_size`` for cropping or ``image_size`` without
augmentation), and moved to the device once: no PIL in the training loop.

Device and precision: ``device`` (auto | cpu | cuda) is where :func:`train_student` moves the
student; ``precision: bf16`` runs the forward pass under autocast (losses in float32). On CUDA
a convolutional student is channels-last. Neither the device nor fp32 enters result keys
(:func:`tint_distill.params.computation_key`).

Optimiser: AdamW with a per-step cosine decay of the learning rate to 0. The global torch RNG
of the caller is left untouched (training runs in ``torch.random.fork_rng`` seeded with
``seed``, for dropout / drop-path inside the model).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .errors import NonFiniteLossError
from .images import Images, images_to_tensor, normalise

from tint_distill.params import COMPUTE_PRECISIONS, SettingError, Settings, check_device, resolve_device

logger = logging.getLogger(__name__)

# Bumped whenever a change alters how a student is trained or scored: cached student results
# carry it in their fingerprints and are recomputed after such a change.
# 2: results carry the query predictions and, when kept, the weights; 3: crops resampled batched in
# float (were per image in uint8), students scored on the uint8 image they are trained on
DISTILLATION_VERSION = 3

STUDENT_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, timm's default for most models
STUDENT_STD = (0.229, 0.224, 0.225)

ProgressCallback = Callable[[str, int, int, dict[str, Any]], None]
"""Called as ``callback(stage, epoch, epochs, record)`` after every epoch (1-based epoch)."""


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD loss: ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over the batch."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    student_log_p = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True) * temperature**2


@dataclass(frozen=True)
class DistillationConfig(Settings):
    """Settings of :func:`train_student` (see the module docstring for the scheme)."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    temperature: float = 4.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    image_size: int = 32
    seed: int = 0
    augmentation: bool = True
    support_batch_size: int | None = None  # None: min(#supports, max(1, batch_size // 4))
    crop_scale: tuple[float, float] = (0.35, 1.0)
    device: str = "auto"        # auto | cpu | cuda: where students train (not part of result keys)
    precision: str = "fp32"     # fp32 | bf16 (autocast on the forward pass)

    @property
    def canvas_size(self) -> int:
        """The side of the uint8 images a student is trained from (twice ``image_size`` to crop from)."""
        return 2 * self.image_size if self.augmentation else self.image_size

    def check(self) -> None:
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        check_device("device", self.device)
        SettingError.unless_one_of("precision", self.precision, COMPUTE_PRECISIONS)
        for name in ("epochs", "batch_size", "image_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DistillationConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"DistillationConfig.temperature must be positive, got {self.temperature}")
        if self.kd_weight < 0 or self.ce_weight < 0:
            raise ValueError("DistillationConfig kd_weight and ce_weight must be >= 0")
        if self.support_batch_size is not None and self.support_batch_size < 1:
            raise ValueError(
                f"DistillationConfig.support_batch_size must be >= 1 or None, got {self.support_batch_size}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"DistillationConfig.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")


def _crop_box(height: int, width: int, scale: tuple[float, float],
              rng: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area, aspect in [3/4, 4/3]."""
    area = height * width
    log_low, log_high = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        u = torch.rand(4, generator=rng).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_low + (log_high - log_low) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    return 0, 0, height, width  # fall back to the whole image


def _resampling(starts: torch.Tensor, lengths: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """``[B, out_size, in_size]`` weights taking, per image, pixels ``start .. start + length`` of a
    row to ``out_size`` pixels: bilinear, antialiased when shrinking (the triangle filter widened
    by the scale, as PyTorch's and Pillow's antialiased resize), each row summing to 1."""
    scale = (lengths.float() / out_size).view(-1, 1, 1)
    width = scale.clamp(min=1.0)  # the filter's half-width, in input pixels
    centres = starts.float().view(-1, 1, 1) + scale * (torch.arange(out_size, device=starts.device).view(1, -1, 1) + 0.5)
    pixels = torch.arange(in_size, device=starts.device).view(1, 1, -1) + 0.5
    inside = (pixels >= starts.view(-1, 1, 1)) & (pixels < (starts + lengths).view(-1, 1, 1))
    weights = ((1 - (pixels - centres).abs() / width).clamp(min=0)) * inside
    return weights / weights.sum(dim=2, keepdim=True)


def crop_boxes(count: int, height: int, width: int, scale: tuple[float, float],
               rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop boxes ``[count, 4]`` (top, left, h, w) and horizontal flips ``[count]`` (bool),
    drawn from ``rng`` in the order the training has always drawn them: the flips, then each box."""
    flips = torch.rand(count, generator=rng) < 0.5
    boxes = torch.tensor([_crop_box(height, width, scale, rng) for _ in range(count)], dtype=torch.long)
    return boxes.view(count, 4), flips


def augment(canvas: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Random resized crop + horizontal flip of a uint8 ``[B, 3, H, W]`` batch, all images at once on
    its device: float ``[B, 3, size, size]`` in [0, 1] (up to float rounding). ``boxes`` (top, left, h, w) and ``flips`` from
    :func:`crop_boxes`. The result equals ``torchvision``'s per-image ``resized_crop`` (bilinear,
    antialiased) up to its rounding to uint8.

    Not the generator pre-training's crop (:func:`tint_distill.pretraining.trainer.augment`:
    square, batched affine resampling of float images): the two draw different random numbers
    and resample differently, and each is fixed by the fingerprints of the work it produced.
    """
    count, channels, height, width = canvas.shape
    boxes = boxes.to(canvas.device)
    rows = _resampling(boxes[:, 0], boxes[:, 2], height, size) / 255                # [B, size, H], to [0, 1]
    columns = _resampling(boxes[:, 1], boxes[:, 3], width, size)                    # [B, size, W]
    columns = torch.where(flips.to(canvas.device).view(-1, 1, 1), columns.flip(1), columns)  # flip: mirrored columns
    # two plain batched products: rows over [B, H, C*W], then columns over [B, C*size, W]
    images = canvas.float().transpose(1, 2).reshape(count, height, channels * width)
    cropped = torch.bmm(rows, images).view(count, size, channels, width).transpose(1, 2)
    cropped = torch.bmm(cropped.reshape(count, channels * size, width), columns.transpose(1, 2))
    return cropped.view(count, channels, size, size)


def student_canvas(images: Images, size: int) -> torch.Tensor:
    """The images decoded and resized once (the one image policy) to a uint8 ``[N, 3, size, size]``
    tensor: what a student trains from; a uint8 tensor of that shape already is one."""
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, size, size):
        return images
    return (images_to_tensor(images, size) * 255).round_().to(torch.uint8)


def _support_stream(n: int, rng: torch.Generator) -> Iterator[int]:
    while True:
        yield from torch.randperm(n, generator=rng).tolist()


def _student_input(batch_uint8: torch.Tensor, config: DistillationConfig, rng: torch.Generator,
                   channels_last: bool) -> torch.Tensor:
    """A uint8 batch on the student's device, augmented (train) and normalised, as the student reads it."""
    if config.augmentation:
        boxes, flips = crop_boxes(batch_uint8.shape[0], *batch_uint8.shape[-2:], config.crop_scale, rng)
        batch = augment(batch_uint8, boxes, flips, config.image_size)
    else:
        batch = TF.to_dtype(batch_uint8, torch.float32, scale=True)
    batch = normalise(batch, STUDENT_MEAN, STUDENT_STD)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def place_student(student: nn.Module, config: DistillationConfig) -> torch.device:
    """Move ``student`` to ``config.device`` (channels-last if convolutional, on a GPU); its device."""
    device = resolve_device(config.device)
    student.to(device)
    if channels_last_on(student, device):
        student.to(memory_format=torch.channels_last)
    return device


def channels_last_on(model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` runs channels-last on ``device``: a convolutional model on a GPU (faster
    convolutions); the teacher and the students decide it alike."""
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def portable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as contiguous CPU tensors, however it was placed: what files and Ray hold."""
    return {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}


def train_student(
    student: nn.Module,
    synthetic_images: Images | None,
    teacher_logits_for_synthetic: torch.Tensor | None,
    support_images: Images,
    support_labels: Sequence[int] | torch.Tensor,
    config: DistillationConfig,
    progress: ProgressCallback | None = None,
) -> list[dict[str, float]]:
    """Train ``student`` in place (KD on synthetic images + CE on supports); returns per-epoch
    records ``{epoch, loss, kd_loss, ce_loss, lr, steps, seconds}`` (losses: means over the
    epoch's steps, kd/ce unweighted; lr: at the start of the epoch). The student is moved to
    ``config.device`` (:func:`place_student`); images are PIL lists or uint8 canvases
    (:func:`student_canvas` at ``config.canvas_size``).

    ``synthetic_images=None`` (or empty) trains on the supports with cross-entropy only. The
    student is left in eval mode. A NaN/inf loss raises :class:`NonFiniteLossError` (stage ``student``).
    """
    n_synthetic = 0 if synthetic_images is None else len(synthetic_images)
    labels = torch.as_tensor(support_labels, dtype=torch.long)
    n_supports = len(support_images)
    if labels.shape != (n_supports,):
        raise ValueError(f"{n_supports} support images but {tuple(labels.shape)} labels")
    if n_supports == 0 and n_synthetic == 0:
        raise ValueError("train_student needs support images or synthetic images")
    device = place_student(student, config)
    channels_last = channels_last_on(student, device)
    if n_synthetic:
        if teacher_logits_for_synthetic is None or teacher_logits_for_synthetic.shape[0] != n_synthetic:
            got = None if teacher_logits_for_synthetic is None else tuple(teacher_logits_for_synthetic.shape)
            raise ValueError(f"{n_synthetic} synthetic images need teacher logits [{n_synthetic}, C], got {got}")
        teacher = teacher_logits_for_synthetic.detach().float().to(device)
        if n_supports and int(labels.max()) >= teacher.shape[1]:
            raise ValueError(f"support label {int(labels.max())} but the teacher has {teacher.shape[1]} classes")

    labels = labels.to(device)
    rng = torch.Generator().manual_seed(config.seed)
    supports = student_canvas(support_images, config.canvas_size).to(device) if n_supports else None
    synthetic = student_canvas(synthetic_images, config.canvas_size).to(device) if n_synthetic else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    if n_synthetic:
        n_items = n_synthetic
        support_per_batch = (min(n_supports, config.support_batch_size or max(1, config.batch_size // 4))
                             if n_supports else 0)
    else:
        n_items, support_per_batch = n_supports, 0
    steps_per_epoch = math.ceil(n_items / config.batch_size)
    if n_items // steps_per_epoch + support_per_batch < 2:
        raise ValueError("train_student needs at least 2 images per batch (BatchNorm cannot train on one)")
    total_steps = config.epochs * steps_per_epoch

    optimiser = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    stream = _support_stream(n_supports, rng) if support_per_batch else None
    logger.info("student training: %d synthetic + %d support images, %d epochs x %d steps (%s)",
                n_synthetic, n_supports, config.epochs, steps_per_epoch, asdict(config))

    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        student.train()
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            step_losses = []  # [loss, kd, ce] per step, on the device: read once per epoch
            lr = optimiser.param_groups[0]["lr"]
            order = torch.randperm(n_items, generator=rng)
            # near-equal batches: no trailing batch of 1 (BatchNorm cannot train on it)
            for step, index in enumerate(torch.tensor_split(order, steps_per_epoch), start=1):
                if n_synthetic:
                    parts = [synthetic[index.to(device)]]
                    if support_per_batch:
                        support_index = torch.tensor([next(stream) for _ in range(support_per_batch)]).to(device)
                        parts.append(supports[support_index])
                    with autocast:
                        logits = student(_student_input(torch.cat(parts), config, rng, channels_last)).float()
                    kd = kd_loss(logits[: len(index)], teacher[index.to(device)], config.temperature)
                    ce = (F.cross_entropy(logits[len(index):], labels[support_index]) if support_per_batch
                          else logits.new_zeros(()))
                else:
                    with autocast:
                        logits = student(_student_input(supports[index.to(device)], config, rng, channels_last)).float()
                    kd, ce = logits.new_zeros(()), F.cross_entropy(logits, labels[index.to(device)])
                loss = config.kd_weight * kd + config.ce_weight * ce if n_synthetic else config.ce_weight * ce
                if not bool(torch.isfinite(loss)):
                    raise NonFiniteLossError("student", step, loss.item(), epoch=epoch,
                                             detail=f"kd={kd.item():.4g}, ce={ce.item():.4g}")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                step_losses.append(torch.stack([loss, kd, ce]).detach())
            totals = dict(zip(("loss", "kd_loss", "ce_loss"), torch.stack(step_losses).double().sum(0).tolist()))
            record = {"epoch": epoch, **{k: v / steps_per_epoch for k, v in totals.items()}, "lr": lr,
                      "steps": steps_per_epoch, "seconds": time.perf_counter() - started}
            history.append(record)
            logger.info("student epoch %d/%d: loss %.4f (kd %.4f, ce %.4f) lr %.3g", epoch, config.epochs,
                        record["loss"], record["kd_loss"], record["ce_loss"], lr)
            if progress is not None:
                progress("student training", epoch, config.epochs, record)
    student.eval()
    return history


def predict(model: nn.Module, images: Images, image_size: int, batch_size: int = 128) -> torch.Tensor:
    """Logits ``[N, C]`` of the student for images resized (whole image) to ``image_size``."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = images_to_tensor(images[start:start + batch_size], image_size).to(device)
                outputs.append(model(normalise(batch, STUDENT_MEAN, STUDENT_STD)).float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict: no images")
    return torch.cat(outputs)


def accuracy(logits: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"accuracy: {logits.shape[0]} predictions for {labels.shape[0]} labels")
    return float((logits.argmax(dim=1) == labels).float().mean())


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def measure_throughput(model: nn.Module, image_size: int, batch_size: int = 64, n_batches: int = 10,
                       warmup: int = 2, threads: int | None = None) -> float:
    """Inference images/s on CPU (eval mode, ``torch.inference_mode``) for random inputs.

    ``threads`` temporarily sets ``torch.set_num_threads`` (None: leave as is).
    """
    if n_batches < 1 or batch_size < 1:
        raise ValueError("measure_throughput needs n_batches >= 1 and batch_size >= 1")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"measure_throughput measures CPU speed; the model is on {device}")
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            started = time.perf_counter()
            for _ in range(n_batches):
                model(x)
            elapsed = time.perf_counter() - started
    finally:
        model.train(was_training)
        torch.set_num_threads(previous_threads)
    return batch_size * n_batches / elapsed
