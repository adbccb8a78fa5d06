"""Parameters and CPU inference throughput (images/s) of the teacher and the student."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tint_distill.params import SettingError, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedSettings(Settings):
    """The ``speed`` block: how the throughput is measured."""

    batch_size: int = 32
    n_batches: int = 5
    threads: int | None = None  # None: torch's default

    def check(self) -> None:
        for name in ("batch_size", "n_batches"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1, got {getattr(self, name)}")


def measure_speed(teacher, student_name: str, n_way: int, student_image_size: int, speed: SpeedSettings) -> dict:
    """``teacher`` (a :class:`~tint_distill.distill.teacher.FeatureBackbone`) and a fresh student
    of ``student_name``: their parameters and CPU images/s, and the student's speed-up."""
    import torch

    from tint_distill.distill.distillation import count_parameters, measure_throughput
    from tint_distill.distill.student import create_student

    student_model = create_student(student_name, num_classes=n_way, image_size=student_image_size)
    threads = speed.threads or torch.get_num_threads()
    measured = {}
    for name, model, size in (("teacher", teacher.model, teacher.image_size),
                              ("student", student_model, student_image_size)):
        images_per_s = measure_throughput(model, size, batch_size=speed.batch_size, n_batches=speed.n_batches,
                                          threads=threads)
        measured[name] = {"parameters": count_parameters(model), "image_size": size, "images_per_s": images_per_s}
        logger.info("%s: %d parameters, %.1f images/s at %d px", name, measured[name]["parameters"], images_per_s, size)
    measured["student_speedup"] = measured["student"]["images_per_s"] / measured["teacher"]["images_per_s"]
    measured["device"] = "cpu"
    measured["threads"] = threads
    return measured


def deployed_speed(onnx_model: bytes, threads: int | None) -> dict:
    """An exported model's CPU latency at batch 1 and throughput at batch 64 on ONNX Runtime."""
    from dataclasses import asdict

    from tint_distill.distill.export import OnnxClassifier

    speed = asdict(OnnxClassifier(onnx_model, threads=threads).speed())
    logger.info("ONNX Runtime, CPU: %.2f ms per image at batch 1, %.0f images/s at batch 64 (%d threads)",
                speed["latency_ms_batch_1"], speed["images_per_s_batch_64"], speed["threads"])
    return {**speed, "runtime": "onnxruntime", "device": "cpu"}
