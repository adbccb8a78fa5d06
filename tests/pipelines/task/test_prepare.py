"""The task's preparation node on a real task folder: its images pass the experiment's own check."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tint_distill.data.images import ImageReadError
from tint_distill.data.task import TaskSettings, build_example_task, task_folder
from tint_distill.distill.student import StudentSettings
from tint_distill.pipelines.task.nodes import prepare_task

STUDENT = StudentSettings(keep_weights=("tint",))


def test_a_one_pixel_or_corrupt_image_stops_the_task_before_any_work_naming_it(embedded_root: Path, tmp_path: Path):
    """Finding 4: the task pipeline ignored data_episodes.min_image_side, so a 1x1 image became a support."""
    root = tmp_path / "task"
    build_example_task(embedded_root, root, ["fish", "clock"], 3, 0, None, 0, 0, 0)
    index, episodes, report = prepare_task(task_folder(root), TaskSettings(), STUDENT, min_image_side=8)
    assert report["classes"] == ["clock", "fish"] and len(index) == 6

    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "fish" / "pixel.png")
    (root / "clock" / "broken.png").write_bytes((root / "fish" / "pixel.png").read_bytes()[:20])
    with pytest.raises(ImageReadError) as error:
        prepare_task(task_folder(root), TaskSettings(), STUDENT, min_image_side=8)
    message = str(error.value)
    assert "clock/broken.png" in message and "fish/pixel.png (1x1 px)" in message, message
    assert "data_episodes.min_image_side" in message
    (root / "clock" / "broken.png").unlink()
    index, _, _ = prepare_task(task_folder(root), TaskSettings(), STUDENT, min_image_side=1)  # the limit is the parameter's
    assert "fish/pixel.png" in set(index["image_id"])
