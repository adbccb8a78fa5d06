"""The baselines a user would try first, on a real task folder of drawings with the real teacher:
each fitted on an episode's supports and scored on its queries, in the students' order."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tint_distill.data.task import TaskSettings, build_example_task, task_folder
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.evaluation.baselines import FEATURE_BASELINES, nearest_class_mean, nearest_neighbour
from tint_distill.pipelines.task.nodes import prepare_task, registered_name, score_baselines, trained_methods


def test_baselines_are_fitted_per_split_and_a_test_image_equal_to_a_support_is_its_nearest(embedded_root: Path,
                                                                                         tmp_path: Path):
    root = tmp_path / "task"
    build_example_task(embedded_root, root, ["fish", "clock", "house"], 3, 2)
    copied = next((root / "fish").glob("*.png"))
    shutil.copy(copied, root / "test" / "fish" / "same_as_a_support.png")
    images = task_folder(root)
    _, episodes, _ = prepare_task(images, TaskSettings(), StudentSettings(keep_weights=("tint",)), 8)
    predictions = score_baselines(images, episodes, TeacherSettings(device="cpu", batch_size=16),
                                  DistillationConfig(image_size=32))

    assert sorted(predictions) == ["episode_0000", "episode_0001", "episode_0002", "episode_0003"]
    for key, predicted in predictions.items():
        queries = episodes[(episodes["episode"] == int(key.split("_")[1])) & (episodes["role"] == "query")]
        assert predicted["labels"] == queries["label"].tolist(), "the queries in the students' order"
        for name in FEATURE_BASELINES:
            assert len(predicted[name]) == len(queries) and set(predicted[name]) <= {0, 1, 2}
    final = episodes[(episodes["episode"] == 0) & (episodes["role"] == "query")].reset_index(drop=True)
    same = final.index[final["image_id"] == "test/fish/same_as_a_support.png"].item()
    fish = final.loc[same, "label"]
    assert predictions["episode_0000"]["nn_raw_pixels"][same] == fish, "distance 0 to its own pixels"
    assert predictions["episode_0000"]["nn_teacher_features"][same] == fish, "similarity 1 to its own features"
    right = sum(p == y for p, y in zip(predictions["episode_0000"]["nn_teacher_features"],
                                       predictions["episode_0000"]["labels"]))
    assert right >= 4, f"the teacher's features tell these drawings apart: {right} of 7 test images right"


def test_nearest_neighbour_and_class_mean_pick_the_nearest():
    supports = torch.tensor([[0.0, 1.0], [0.0, 3.0], [4.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    queries = torch.tensor([[0.0, 2.9], [3.0, 0.5], [1.0, 1.0]])
    assert nearest_neighbour(supports, labels, queries, cosine=False) == [0, 1, 0]
    assert nearest_neighbour(supports, labels, torch.tensor([[0.1, 10.0], [10.0, 0.1]]), cosine=True) == [0, 1]
    assert nearest_class_mean(supports, labels, torch.tensor([[0.0, 2.0], [2.5, 0.5]])) == [0, 1]


def test_the_supports_only_student_is_always_trained_and_registration_follows_the_verdict():
    assert trained_methods(TaskSettings(methods=("tint",))) == ["supports_only", "tint"]
    wins, loses = {"verdict": {"beats_baselines": True}}, {"verdict": {"beats_baselines": False}}
    assert registered_name(TaskSettings(), wins) == "tint_distill_task"
    assert registered_name(TaskSettings(), loses) is None, "auto: no new version for a student that loses"
    assert registered_name(TaskSettings(register="always"), loses) == "tint_distill_task"
    assert registered_name(TaskSettings(register="never"), wins) is None
    assert registered_name(TaskSettings(registered_model_name=None, register="always"), wins) is None
