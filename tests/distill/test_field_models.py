"""The field's models by name, at real size with random weights: the few-shot ResNet-12 student
(``student.name: resnet12``) and a DINOv2 ViT teacher from a local weights file, loaded strictly."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file

from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.errors import WeightsMismatchError
from tint_distill.distill.student import StudentSettings, create_student, load_backbone_weights, rebuild_student
from tint_distill.distill.teacher import (PrototypeClassifier, TeacherSettings, create_teacher, extract_features,
                                          load_timm_backbone, teacher_logits)
from tint_distill.fingerprints import fingerprint
from tint_distill.params import ParameterError, settings_from_params
from tint_distill.stages.distillation import EpisodeData, label_episode, train_one
from tint_distill.work import Worker

VIT = "vit_small_patch14_dinov2"
CLASSES = ("fish", "clock")


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    """A random-weight ViT-S/14 DINOv2 saved as timm would publish it (518 px position embedding)."""
    source = timm.create_model(VIT, pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("teacher") / "dinov2_vits14.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return path, source.state_dict()


# --- ResNet-12 -----------------------------------------------------------------------------------


def test_resnet12_is_a_timm_student_at_84_px():
    model = create_student("resnet12", num_classes=5, image_size=84)
    # MetaOptNet / FEAT report 12.4 M parameters for ResNet-12 (64-160-320-640)
    assert sum(p.numel() for p in model.parameters()) == 12_427_525
    assert timm.is_model("resnet12") and "resnet12" in timm.list_models("resnet1*")
    assert [stage.conv1[0].out_channels for stage in model.stages] == [64, 160, 320, 640]
    images = torch.rand(4, 3, 84, 84, generator=torch.Generator().manual_seed(0))
    features = model.forward_features(images)
    assert features.shape == (4, 640, 5, 5)
    assert model.forward_head(features, pre_logits=True).shape == (4, 640)

    model.train()
    logits = model(images)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert logits.shape == (4, 5) and all(p.grad is not None for p in model.parameters())

    model.reset_classifier(3)
    assert model(images).shape == (4, 3) and model.get_classifier().out_features == 3


def test_resnet12_saved_reloaded_and_started_from_base_weights(tmp_path):
    trained = create_student("resnet12", num_classes=5, image_size=84, seed=1)
    again = rebuild_student("resnet12", 5, 84, trained.state_dict())
    images = torch.rand(2, 3, 84, 84, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(again(images), trained(images))

    base = create_student("resnet12", num_classes=64, image_size=84, seed=2)  # a base-class student
    path = tmp_path / "base.safetensors"
    save_file(base.state_dict(), str(path))
    episode = create_student("resnet12", num_classes=5, image_size=84, pretrained_weights=path)
    assert torch.equal(episode.stages[3].conv3[0].weight, base.stages[3].conv3[0].weight)
    assert episode.fc.out_features == 5

    wrong = create_student("resnet10t_half", num_classes=5, image_size=32)
    save_file(wrong.state_dict(), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsMismatchError, match=r"wrong\.safetensors: does not fit this student \(ResNet12\): "
                                                   r"missing \['stages\.0\..*unexpected"):
        load_backbone_weights(episode, tmp_path / "wrong.safetensors")


@pytest.mark.slow
def test_resnet12_exports_to_onnx_and_runs_the_same():
    from tint_distill.distill.export import OnnxClassifier, export_onnx

    student = create_student("resnet12", num_classes=5, image_size=84, seed=3)
    classifier = OnnxClassifier(export_onnx(student, 84, ["a", "b", "c", "d", "e"]))
    assert classifier.image_size == 84 and classifier.classes == ["a", "b", "c", "d", "e"]
    batch = torch.rand(3, 3, 84, 84, generator=torch.Generator().manual_seed(1))
    logits, _ = classifier.run(batch.numpy())
    from tint_distill.distill.export import DeployedStudent

    with torch.inference_mode():
        expected, _ = DeployedStudent(student)(batch)
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4)


# --- names and keys ------------------------------------------------------------------------------


def test_unknown_model_names_are_refused_naming_the_parameter():
    with pytest.raises(ParameterError, match=r"parameter 'student\.name' is not a timm model name.*'resnet13'.*"
                                             r"close names: .*'resnet12'"):
        settings_from_params(StudentSettings, {"name": "resnet13"}, "student")
    with pytest.raises(ParameterError, match=r"parameter 'teacher\.backbone' is not efficientnet_lite0 nor a timm "
                                             r"model name.*vit_small_patch14_dinov3"):
        settings_from_params(TeacherSettings, {"backbone": "vit_small_patch14_dinov3", "weights_file": "x"}, "teacher")
    with pytest.raises(ParameterError, match=r"parameter 'teacher\.weights_file' must name a local weights file for "
                                             r"teacher 'vit_small_patch14_dinov2'"):
        settings_from_params(TeacherSettings, {"backbone": VIT}, "teacher")
    with pytest.raises(ParameterError, match=r"parameter 'teacher\.image_size' must be null"):
        settings_from_params(TeacherSettings, {"image_size": 0}, "teacher")
    assert settings_from_params(StudentSettings, {"name": "resnet12"}, "student").name == "resnet12"
    assert settings_from_params(StudentSettings, {"name": "resnet10t_half"}, "student").name == "resnet10t_half"
    assert settings_from_params(TeacherSettings, {"backbone": VIT, "weights_file": "x"}, "teacher").backbone == VIT


def test_a_null_teacher_image_size_keeps_the_fingerprints_made_before_it():
    before = {"backbone": "efficientnet_lite0", "weights_file": None, "temperature": 0.1, "finetune_steps": 0,
              "batch_size": 32}  # the block as it was, hashed by the teacher's units
    assert fingerprint(1, TeacherSettings().key()) == fingerprint(1, before)
    assert fingerprint(1, TeacherSettings(image_size=224).key()) != fingerprint(1, before)


# --- the ViT teacher -----------------------------------------------------------------------------


@pytest.mark.slow
def test_dinov2_teacher_at_its_native_size_from_a_local_file(vit_weights, take):
    path, state = vit_weights
    teacher = create_teacher(TeacherSettings(backbone=VIT, weights_file=str(path)))
    assert teacher.image_size == 518 and teacher.num_features == 384
    assert teacher.mean == (0.485, 0.456, 0.406) and teacher.std == (0.229, 0.224, 0.225)
    loaded = teacher.model.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)

    supports = [take(name, 0, 1)[0] for name in CLASSES]
    features = extract_features(teacher, supports, batch_size=2)
    assert features.shape == (2, 384) and torch.isfinite(features).all()
    classifier = PrototypeClassifier(temperature=0.1).fit(features, [0, 1])
    logits = teacher_logits(teacher, classifier, take("fish", 1, 2), batch_size=2)
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_a_wrong_teacher_weights_file_is_refused(vit_weights, tmp_path):
    path, state = vit_weights
    half = {k: v for k, v in state.items() if not k.startswith("blocks.1")}  # a truncated file
    save_file({**half, "extra.weight": torch.zeros(2)}, str(tmp_path / "truncated.safetensors"))
    with pytest.raises(WeightsMismatchError, match=r"truncated\.safetensors: does not fit teacher 'vit_small_patch14_"
                                                   r"dinov2': missing \['blocks\.1\..*\] and \d+ more; "
                                                   r"unexpected \['extra\.weight'\]"):
        load_timm_backbone(VIT, tmp_path / "truncated.safetensors")

    # another timm model's file, and a file with a tensor of another width: refused, never partly loaded
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(tmp_path / "resnet.safetensors"))
    with pytest.raises(WeightsMismatchError,
                       match=r"resnet\.safetensors: does not fit teacher .*missing.*unexpected"):
        load_timm_backbone(VIT, tmp_path / "resnet.safetensors")
    wider = dict(state)
    wider["cls_token"] = torch.zeros(1, 1, 768)
    save_file(wider, str(tmp_path / "wider.safetensors"))
    with pytest.raises(WeightsMismatchError, match=r"wider\.safetensors: .*of another shape \['cls_token \(1, 1, 768\) "
                                                   r"\(model \(1, 1, 384\)\)'\]"):
        load_timm_backbone(VIT, tmp_path / "wider.safetensors")

    # a CNN whose timm loader used to drop the head and then load non-strictly
    source = timm.create_model("resnet10t", pretrained=False)
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsMismatchError,
                       match=r"partial\.pth: does not fit teacher 'resnet10t': missing \['layer4"):
        load_timm_backbone("resnet10t", tmp_path / "partial.pth")
    torch.save(source.state_dict(), tmp_path / "whole.pth")  # the ImageNet head in the file is not used
    assert load_timm_backbone("resnet10t", tmp_path / "whole.pth").num_features == 512


def test_teacher_labels_and_resnet12_trains_at_84_px(vit_weights, take):
    """The distillation stage's own units: the ViT teacher (checkpoint at 518 px, built at 224 px with its
    position embedding resampled) labels an episode, a ResNet-12 student trains on it at 84 px."""
    path, _ = vit_weights
    settings = TeacherSettings(backbone=VIT, weights_file=str(path), image_size=224, batch_size=8)
    supports, queries, synthetic = ([take(name, start, start + 1)[0] for name in CLASSES] for start in (0, 1, 2))
    data = EpisodeData(supports, [0, 1], queries, [0, 1], {"tint": (synthetic, [0, 1])})
    worker = Worker()
    targets = label_episode(worker, settings, data)
    teacher = worker.keep(("teacher", settings), lambda: None)
    assert teacher.image_size == 224 and teacher.model.pos_embed.shape == (1, 1 + 16 * 16, 384)
    assert targets["query_logits"].shape == (2, 2) and targets["tint.logits"].shape == (2, 2)
    assert torch.isfinite(targets["tint.logits"]).all()

    student = StudentSettings(name="resnet12", init="scratch", keep_weights=("tint",))
    config = DistillationConfig(epochs=1, batch_size=2, image_size=84)
    result = train_one(worker, "tint", 0, student, None, config, data, targets)
    assert result["student"] == "resnet12" and result["image_size"] == 84 and result["n_unlabeled"] == 2
    assert len(result["history"]) == 1 and 0.0 <= result["accuracy"] <= 1.0
    assert rebuild_student("resnet12", 2, 84, result["weights"]).fc.out_features == 2
    assert dataclasses.asdict(settings)["image_size"] == 224 and settings.key()["image_size"] == 224
