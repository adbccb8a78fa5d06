"""The exported student: ONNX Runtime gives what PyTorch gives, on real drawings, at any batch size;
the file carries its classes; unreadable files are reported, not fatal."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch

from tint_distill.data.images import read_rgb_image
from tint_distill.distill import DistillationConfig, binomial_ci95, create_student, train_student
from tint_distill.distill.export import DeployedStudent, OnnxClassifier, classify_files, export_onnx
from tint_distill.distill.images import images_to_tensor


@pytest.fixture(scope="module")
def trained(embedded_root):
    """A student trained briefly on real drawings of three classes (weights far from their init)."""
    classes = ["clock", "fish", "house"]
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((embedded_root / name).glob("*.png"))[:6]:
            images.append(read_rgb_image(file))
            labels.append(label)
    student = create_student(num_classes=3, image_size=32, seed=1)
    train_student(student, None, None, images, labels, DistillationConfig(epochs=3, batch_size=8))
    return student.eval(), classes, images


def test_onnx_runtime_matches_pytorch_within_1e4_on_real_images(trained):
    student, classes, images = trained
    blob = export_onnx(student, 32, classes, metadata={"method": "tint"})
    model = onnx.load_from_string(blob)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    classifier = OnnxClassifier(blob)
    assert classifier.classes == classes and classifier.image_size == 32
    assert classifier.metadata["method"] == "tint"
    batch = images_to_tensor(images, 32)
    with torch.inference_mode():
        logits, probabilities = DeployedStudent(student)(batch)
    for size in (1, 7, len(images)):  # the batch dimension is dynamic
        onnx_logits, onnx_probabilities = classifier.run(batch[:size].numpy())
        np.testing.assert_allclose(onnx_logits, logits[:size].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(onnx_probabilities, probabilities[:size].numpy(), atol=1e-4, rtol=0)
    assert len(set(logits.argmax(1).tolist())) > 1, "a trained student, not a constant one"


def test_classify_files_lists_unreadable_files_and_classifies_the_rest(trained, tmp_path, embedded_root):
    student, classes, _ = trained
    classifier = OnnxClassifier(export_onnx(student, 32, classes))
    good = sorted((embedded_root / "fish").glob("*.png"))[10:13]
    for file in good:
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("hello")
    files = sorted(tmp_path.iterdir())
    rows = {row["file"].rsplit("/", 1)[1]: row for row in classify_files(classifier, files, batch_size=2)}
    assert "cannot decode image" in rows["broken.png"]["error"] and rows["broken.png"]["predicted_class"] is None
    assert "not an image file" in rows["notes.txt"]["error"]
    expected = classifier.probabilities([read_rgb_image(f) for f in good])
    for file, p in zip(good, expected):
        row = rows[file.name]
        assert row["error"] == "" and row["predicted_class"] == classes[int(p.argmax())]
        assert row["probability"] == pytest.approx(float(p.max()), abs=1e-6)
        assert sum(row[f"p_{name}"] for name in classes) == pytest.approx(1.0, abs=1e-5)


def test_wilson_interval_known_values():
    low, high = binomial_ci95(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = binomial_ci95(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    with pytest.raises(ValueError):
        binomial_ci95(3, 2)
