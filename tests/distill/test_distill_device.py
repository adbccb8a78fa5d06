"""The teacher and the students on a device: settings, result keys, the uint8 data path and the
batched augmentation (all on the CPU here; the same code runs on CUDA)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from tint_distill.distill.distillation import (DistillationConfig, augment, crop_boxes, predict, student_canvas,
                                               train_student)
from tint_distill.distill.student import create_student
from tint_distill.distill.teacher import TeacherSettings, extract_features, load_teacher
from tint_distill.params import ParameterError, SettingError, computation_key, resolve_device, settings_from_params
from tint_distill.stages.distillation import EpisodeData

CLASSES = ("fish", "clock", "house")


@pytest.fixture(scope="module")
def drawings_by_class(take):
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        images += take(name, 0, 8)
        labels += [label] * 8
    return images, labels


def test_devices_resolve_and_cuda_is_refused_without_a_gpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU is available"):
            resolve_device("cuda")
    for cls, name in ((DistillationConfig, "distillation"), (TeacherSettings, "teacher")):
        with pytest.raises(ParameterError, match=rf"parameter '{name}\.device' must be one of \['auto', 'cpu', 'cuda'\]"):
            settings_from_params(cls, {"device": "tpu"}, name)
        with pytest.raises(ParameterError, match=rf"parameter '{name}\.precision' must be one of \['fp32', 'bf16'\]"):
            settings_from_params(cls, {"precision": "fp16"}, name)
        assert settings_from_params(cls, {"device": "cuda:1"}, name).device == "cuda:1"
    with pytest.raises(SettingError):
        DistillationConfig(device="gpu")


@pytest.mark.parametrize("cls", [DistillationConfig, TeacherSettings])
def test_result_keys_leave_out_the_device_and_fp32(cls):
    """The same result computed on a CPU or a GPU is reused, and keys from before these settings
    existed stay as they were; bf16 computes something else."""
    before = {f.name: v for f, v in ((f, getattr(cls(), f.name)) for f in dataclasses.fields(cls))
              if f.name not in ("device", "precision")}
    assert computation_key(cls()) == computation_key(cls(device="cpu")) == computation_key(cls(device="cuda"))
    assert computation_key(cls()) == {k: list(v) if isinstance(v, tuple) else v for k, v in before.items()}
    assert computation_key(cls(precision="bf16"))["precision"] == "bf16"
    if cls is TeacherSettings:  # what the teacher's units are keyed on
        assert cls().key() == cls(device="cuda").key() != cls(precision="bf16").key()


def test_batched_augmentation_is_torchvisions_resized_crop_and_flip(drawings_by_class):
    images, _ = drawings_by_class
    canvas = student_canvas(images, 64)
    assert canvas.dtype == torch.uint8 and canvas.shape == (len(images), 3, 64, 64)
    boxes, flips = crop_boxes(len(images), 64, 64, (0.35, 1.0), torch.Generator().manual_seed(3))
    assert flips.any() and not flips.all()
    out = augment(canvas, boxes, flips, 32)
    assert out.dtype == torch.float32 and out.shape == (len(images), 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    expected = []
    for image, (top, left, h, w), flip in zip(canvas.float() / 255, boxes.tolist(), flips.tolist()):
        crop = TF.resized_crop(image, top, left, h, w, [32, 32], interpolation=InterpolationMode.BILINEAR,
                               antialias=True)
        expected.append(TF.horizontal_flip(crop) if flip else crop)
    assert (out - torch.stack(expected)).abs().max() < 1e-3 / 255
    upscaled = augment(canvas[:2], torch.tensor([[5, 7, 10, 12]] * 2), torch.tensor([False, False]), 32)
    reference = TF.resized_crop(canvas[:2].float() / 255, 5, 7, 10, 12, [32, 32], antialias=True)
    assert (upscaled - reference).abs().max() < 1e-3 / 255, "small crops are enlarged bilinearly"


def test_a_student_trains_the_same_from_decoded_canvases_as_from_pil_images(drawings_by_class):
    images, labels = drawings_by_class
    config = DistillationConfig(epochs=6, batch_size=12, learning_rate=3e-3, seed=2, device="cpu")
    data = EpisodeData(images[::2], labels[::2], images[1::2], labels[1::2], {"m": (images[1::2], labels[1::2])})
    decoded = data.for_student(config)
    assert decoded.supports.dtype == torch.uint8 and decoded.supports.shape == (12, 3, 64, 64)
    assert decoded.queries.shape == (12, 3, 32, 32) and decoded.distilled["m"][0].shape == (12, 3, 64, 64)
    assert decoded.for_student(config).supports is decoded.supports, "decoded once"

    from_pil = create_student(num_classes=3, image_size=32, seed=1)
    from_canvas = create_student(num_classes=3, image_size=32, seed=1)
    history = train_student(from_pil, None, None, data.supports, data.support_labels, config)
    assert history == [{**r, "seconds": h["seconds"]} for r, h in zip(
        train_student(from_canvas, None, None, decoded.supports, decoded.support_labels, config), history)]
    losses = [r["loss"] for r in history]
    assert torch.isfinite(torch.tensor(losses)).all() and losses[-1] < 0.6 * losses[0], losses
    logits = predict(from_canvas, decoded.queries, 32)
    assert logits.shape == (12, 3) and torch.allclose(logits, predict(from_pil, decoded.queries, 32))


def test_bf16_autocast_runs_on_the_cpu(drawings_by_class):
    images, labels = drawings_by_class
    soft = 3.0 * torch.nn.functional.one_hot(torch.tensor(labels), 3).float()
    config = DistillationConfig(epochs=2, batch_size=12, device="cpu", precision="bf16")
    history = train_student(create_student(num_classes=3, image_size=32), images, soft, images[:6], labels[:6], config)
    assert torch.isfinite(torch.tensor([[r["loss"], r["kd_loss"], r["ce_loss"]] for r in history])).all()
    assert history[0]["kd_loss"] > 0 and history[0]["ce_loss"] > 0

    teacher = load_teacher(TeacherSettings(device="cpu", precision="bf16"))
    assert teacher.device == torch.device("cpu") and teacher.autocast_dtype == torch.bfloat16
    half = extract_features(teacher, images[:3], batch_size=3)
    teacher.autocast_dtype = None
    full = extract_features(teacher, images[:3], batch_size=3)
    assert half.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(half, full).min() > 0.98
