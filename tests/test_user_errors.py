"""A user's mistake is one short message at the command line, a bug keeps its traceback: every
`kedro run` here stops in the run's checks, before any work (and before MLflow opens a run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from kedro.io import DatasetError

from tint_distill.data.sources import DataLayoutError
from tint_distill.datasets import ImageFilesDataset, TaskFolderDataset
from tint_distill.params import ParameterError

from tests.conftest import KEDRO


def kedro_run(project: Path, *args: str, python: list[str] = KEDRO) -> tuple[int, list[str]]:
    """``kedro run <args>`` as a user's terminal of 80 columns shows it: exit status and output lines."""
    environment = {**{k: v for k, v in os.environ.items() if k != "TINT_TRACEBACK"}, "COLUMNS": "80"}
    result = subprocess.run([*python, "run", *args], cwd=project, capture_output=True, text=True, timeout=300,
                            env=environment)
    return result.returncode, (result.stdout + result.stderr).splitlines()


@pytest.mark.slow
def test_a_parameter_mistake_is_a_few_lines_naming_it(kedro_project: Path):
    status, lines = kedro_run(kedro_project, "--params", "synthesis.alpha=2")  # the issue's own command
    output = "\n".join(lines)
    assert status != 0
    assert len(lines) < 15, output
    assert "Error: parameter 'synthesis.alpha' must be in [0, 1]" in output
    assert "Where to look: conf/base/parameters*.yml" in output
    assert "Traceback" not in output and "warning" not in output.lower(), output


@pytest.mark.slow
def test_predict_before_any_task_says_to_run_the_task_first_and_opens_no_mlflow_run(kedro_project: Path):
    images = kedro_project / "data" / "01_raw" / "openclipart" / "fish"
    status, lines = kedro_run(kedro_project, "--pipelines", "predict", "--params", f"predict_path={images}")
    output = "\n".join(lines)
    assert status != 0 and "Traceback" not in output, output
    message = [line for line in lines if line.startswith("Error: ")]
    assert message == ["Error: 'task.student_onnx' does not exist yet: the task pipeline makes it; run "
                       "`kedro run --pipelines task --params task_path=<your task folder>` first."], output
    assert "Did not find any versions" not in output
    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    assert mlflow.search_runs(search_all_experiments=True).empty, "no (failed) MLflow run"


@pytest.mark.slow
def test_a_task_folder_with_an_unreadable_image_stops_before_any_work(kedro_project: Path, tmp_path: Path):
    """The task's preparation (every image decoded, class names checked) runs in the run's checks."""
    drawings, task = kedro_project / "data" / "01_raw" / "openclipart", tmp_path / "task"
    for name in ("fish", "clock"):
        shutil.copytree(drawings / name, task / name)
    (task / "clock" / "broken.png").write_bytes(b"\x89PNG but truncated")
    status, lines = kedro_run(kedro_project, "--pipelines", "task", "--params", f"task_path={task}")
    output = "\n".join(lines)
    assert status != 0 and "Traceback" not in output and "Running node" not in output, output
    error = lines.index("Error: 1 image(s) cannot be read; fix or remove them:")
    assert lines[error + 1] == f"  {task / 'clock' / 'broken.png'}: cannot decode image (UnidentifiedImageError); " \
                               "replace or delete this file.", output
    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    assert mlflow.search_runs(search_all_experiments=True).empty, "no (failed) MLflow run"


@pytest.mark.slow
def test_a_bug_keeps_its_traceback_and_verbose_shows_a_mistakes_too(kedro_project: Path):
    """A RuntimeError in the run's own checks (put there for this test) is a bug: shown with its traceback."""
    inject = ("import sys; from tint_distill.hooks.run_guard import RunGuard\n"
              "def broken(context): raise RuntimeError('an internal bug')\n"
              "RunGuard._check_parameters = staticmethod(broken)\n"
              "from kedro.framework.cli.cli import main; sys.argv[0] = 'kedro'; main()")
    status, lines = kedro_run(kedro_project, "--env", "test", python=[sys.executable, "-c", inject])
    output = "\n".join(lines)
    assert status != 0
    assert "Traceback" in output and "RuntimeError: an internal bug" in output, output

    status, lines = kedro_run(kedro_project, "--env", "test", "--params", "synthesis.alpha=2", "--verbose")
    output = "\n".join(lines)
    assert status != 0 and "Traceback" in output, "--verbose shows the traceback"
    assert "ParameterError: parameter 'synthesis.alpha'" in output


def test_the_user_error_behind_kedro_dataset_errors_is_found(tmp_path: Path):
    from tint_distill.errors import UserInputError, user_input_error

    (tmp_path / "fish").mkdir()
    with pytest.raises(DatasetError) as raised:  # Kedro wraps the dataset's own error
        TaskFolderDataset(path=str(tmp_path)).load()
    found = user_input_error(raised.value)
    assert isinstance(found, DataLayoutError) and "at least two class folders" in str(found)
    with pytest.raises(DatasetError) as raised:
        TaskFolderDataset(path=str(tmp_path / "missing")).load()
    assert "task folder not found; pass yours with --params task_path=" in str(user_input_error(raised.value))
    assert isinstance(ParameterError("x"), UserInputError)

    for folder, expected in ((tmp_path / "missing", "folder of images to classify not found"),
                             (tmp_path / "fish", "no files to classify in this folder")):
        with pytest.raises(DatasetError) as raised:
            ImageFilesDataset(path=str(folder)).load()
        assert expected in str(user_input_error(raised.value))

    try:  # a bug raised while handling a user's mistake is a bug (its context is not followed)
        try:
            raise ParameterError("parameter 'x' must be >= 1")
        except ParameterError:
            raise KeyError("a bug")
    except KeyError as bug:
        assert user_input_error(bug) is None
    assert user_input_error(RuntimeError("a bug")) is None
