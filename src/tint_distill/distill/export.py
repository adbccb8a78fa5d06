"""A trained student as a deployable model: ONNX (with its classes and input policy inside) and an
ONNX Runtime classifier that reads it. Plain PyTorch / ONNX, no Kedro.

The exported graph takes what a user has: RGB images under the project's one image policy (padded
to a square on white, resized to ``image_size``, bilinear: :mod:`tint_distill.data.model_input`), float32 in [0, 1],
``[batch, 3, S, S]`` with any batch size. The normalisation the student was trained with is
inside the graph. It returns ``logits`` and ``probabilities`` (softmax), ``[batch, classes]``.
The class names and the input policy are in the model's metadata (``metadata_props``), so the
``.onnx`` file alone is enough to classify images.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tint_distill.data.model_input import INPUT_POLICY

from .distillation import STUDENT_MEAN, STUDENT_STD
from .images import Images, images_to_tensor

ONNX_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")


class DeployedStudent(nn.Module):
    """The student with its input normalisation and a softmax: ``[N, 3, S, S]`` in [0, 1] ->
    ``(logits, probabilities)``."""

    def __init__(self, student: nn.Module, mean: Sequence[float] = STUDENT_MEAN, std: Sequence[float] = STUDENT_STD):
        super().__init__()
        self.student = student.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.student((images - self.mean) / self.std)
        return logits, torch.softmax(logits, dim=1)


def export_onnx(student: nn.Module, image_size: int, classes: Sequence[str], metadata: dict | None = None,
                opset: int = ONNX_OPSET) -> bytes:
    """The student as a serialised ONNX model with a dynamic batch dimension, its class names and
    input policy in ``metadata_props`` (plus ``metadata``, JSON-encoded values)."""
    import onnx

    deployed = DeployedStudent(student).eval()
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    program = torch.onnx.export(
        deployed, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES), dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
        external_data=False, verbose=False,
    )
    model = program.model_proto
    properties = {"classes": list(classes), "image_size": int(image_size), "input": INPUT_POLICY, **(metadata or {})}
    del model.metadata_props[:]
    for key, value in properties.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass
class Speed:
    latency_ms_batch_1: float
    images_per_s_batch_64: float
    threads: int


class OnnxClassifier:
    """An exported student on ONNX Runtime (CPU): class names and input size from the model itself."""

    def __init__(self, model: bytes | str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        properties = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}
        missing = {"classes", "image_size"} - set(properties)
        if missing:
            raise ValueError(f"{model if not isinstance(model, bytes) else 'the ONNX model'} lacks the metadata "
                             f"{sorted(missing)}: export it with tint_distill.distill.export.export_onnx.")
        self.metadata = properties
        self.classes: list[str] = list(properties["classes"])
        self.image_size: int = int(properties["image_size"])
        self.threads = threads

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, probabilities)`` of a ``[N, 3, S, S]`` float32 batch in [0, 1]."""
        inputs = {INPUT_NAME: np.ascontiguousarray(batch, np.float32)}
        logits, probabilities = self.session.run(list(OUTPUT_NAMES), inputs)
        return logits, probabilities

    def to_batch(self, images: Images) -> np.ndarray:
        """Images as the model's input, by the same converter the student was trained with."""
        return images_to_tensor(images, self.image_size).numpy()

    def probabilities(self, images: Images) -> np.ndarray:
        return self.run(self.to_batch(images))[1]

    def speed(self, repeats: int = 20, warmup: int = 3) -> Speed:
        """CPU latency at batch 1 (median, ms) and throughput at batch 64 (images/s), random inputs."""
        rng = np.random.default_rng(0)
        one = rng.random((1, 3, self.image_size, self.image_size), dtype=np.float32)
        many = rng.random((64, 3, self.image_size, self.image_size), dtype=np.float32)
        for _ in range(warmup):
            self.run(one), self.run(many)
        latencies = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.run(one)
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(repeats):
            self.run(many)
        elapsed = time.perf_counter() - start
        configured = int(self.session.get_session_options().intra_op_num_threads)
        threads = self.threads or configured or torch.get_num_threads()
        return Speed(latency_ms_batch_1=1000 * float(np.median(latencies)),
                     images_per_s_batch_64=64 * repeats / elapsed, threads=threads)


def _read(path: Path) -> Image.Image | str:
    """The image, or why it cannot be read (never raises for a bad file)."""
    from tint_distill.data.images import IMAGE_SUFFIXES, read_rgb_image

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix '{path.suffix}')"
    try:
        return read_rgb_image(path)
    except Exception as error:  # noqa: BLE001 - every unreadable file is reported, none stops the others
        return str(error)


def classify_files(classifier: OnnxClassifier, files: Sequence[Path], batch_size: int = 256,
                   workers: int | None = None) -> list[dict]:
    """One row per file: ``predicted_class``, ``probability`` (of that class), ``p_<class>`` for each
    class and ``error`` (empty, or why the file could not be read; such a row has no prediction).
    Files are decoded and resized on ``workers`` threads, ``batch_size`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    rows = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for start in range(0, len(files), batch_size):
            chunk = list(files[start:start + batch_size])
            decoded = list(pool.map(_read, chunk))
            good = [i for i, item in enumerate(decoded) if isinstance(item, Image.Image)]
            probabilities = np.empty((0, len(classifier.classes)), np.float32)
            if good:
                tensors = list(pool.map(lambda i: images_to_tensor([decoded[i]], classifier.image_size)[0], good))
                probabilities = classifier.run(torch.stack(tensors).numpy())[1]
            by_position = dict(zip(good, probabilities))
            for position, (file, item) in enumerate(zip(chunk, decoded)):
                row = {"file": str(file), "predicted_class": None, "probability": None,
                       **{f"p_{name}": None for name in classifier.classes}, "error": ""}
                if position in by_position:
                    p = by_position[position]
                    best = int(p.argmax())
                    row.update(predicted_class=classifier.classes[best], probability=float(p[best]),
                               **{f"p_{name}": float(v) for name, v in zip(classifier.classes, p)})
                else:
                    row["error"] = item
                rows.append(row)
    return rows
