"""The project as users drive it: `kedro run`, MLflow tracking, `kedro viz build`."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import copy_pretrained, kedro


@pytest.mark.slow
def test_data_episodes_run_is_reproducible_and_tracked(pretrained_project: Path, tmp_path: Path):
    """The session's pretraining run drew the episodes once; a run in a copy draws them again."""
    project = copy_pretrained(pretrained_project, tmp_path / "project")
    episodes_file = project / "data" / "03_primary" / "episodes.csv"
    first = episodes_file.read_bytes()
    episodes_file.unlink()
    shutil.rmtree(project / "data" / "08_reporting" / "episode_support_grids")  # this run draws them again
    kedro(project, "run", "--pipelines", "data_episodes", "--env", "test")
    assert episodes_file.read_bytes() == first, "same seed and data must give identical episodes"

    episodes = pd.read_csv(episodes_file)
    assert episodes["episode"].nunique() == 3 and len(episodes) == 3 * 3 * (2 + 4)
    assert (project / "data" / "08_reporting" / "episode_support_grids" / "episode_0000.png").is_file()

    for folder in (pretrained_project, project):  # each run is tracked
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        runs = mlflow.search_runs(experiment_names=["tint_distill"])
        assert len(runs) == 1 and (runs["status"] == "FINISHED").all()
        assert runs["params.data_episodes.sampling.n_way"].tolist() == ["3"]
        assert runs["params.data_episodes.sampling.seed"].tolist() == ["7"]
    client = mlflow.MlflowClient()  # the copy's run: data_episodes alone
    artifacts = client.list_artifacts(runs["run_id"].iloc[0])
    assert {"episodes", "episode_support_grids", "data_episodes"} <= {a.path for a in artifacts}
    grids = [a.path for a in client.list_artifacts(runs["run_id"].iloc[0], "episode_support_grids")]
    assert grids == ["episode_support_grids/episode_0000.png"], "the folder is not doubled"
    assert not (project / "mlruns" / "0").exists(), "no MLflow file store: the SQLite store is used"


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["three_images", "corrupt_png"])
def test_bad_input_gives_one_line_error_naming_it(kedro_project: Path, problem: str):
    raw = kedro_project / "data" / "01_raw" / "openclipart"
    if problem == "three_images":
        sparse = raw / "fish"
        for file in sorted(sparse.glob("*.png"))[3:]:
            file.unlink()
        expected = "class 'fish' (folder 'fish') has 3 images"
    else:
        victim = sorted((raw / "mammal").glob("*.png"))[0]
        victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        expected = f"{victim.relative_to(kedro_project)}: cannot decode image (UnidentifiedImageError); replace or delete"
    result = kedro(kedro_project, "run", "--pipelines", "data_episodes", "--env", "test", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if expected in line]
    assert lines, output[-3000:]


@pytest.mark.slow
def test_kedro_viz_build(kedro_project: Path):
    kedro(kedro_project, "viz", "build")
    assert (kedro_project / "build" / "index.html").is_file()
    assert (kedro_project / "build" / "api" / "main").is_file()
