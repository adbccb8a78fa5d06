"""What keeps saved work safe outside the partition store: the run lock and the MLflow store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_kedro_project import kedro
from tint_distill.locks import FolderLock
from tint_distill.tracking_store import TrackingStoreError, check_sqlite_store, sqlite_store_path

TRY_LOCK = """
import sys
from tint_distill.locks import FolderLock
sys.exit(0 if FolderLock(sys.argv[1]).try_acquire({"pipelines": ["second"]}) else 3)
"""


def test_deleting_the_run_lock_file_does_not_let_a_second_run_in(tmp_path: Path):
    """Finding 5: the lock was a flock on data/.run.lock; deleting that file (it looks stale) mid-run
    let a second run start beside the first."""
    note = tmp_path / "data" / ".run.lock"
    first = FolderLock(note)
    assert first.try_acquire({"pipelines": ["first"]})
    assert first.holder()["pipelines"] == ["first"]
    note.unlink()
    second = subprocess.run([sys.executable, "-c", TRY_LOCK, str(note)], capture_output=True, text=True)
    assert second.returncode == 3, second.stderr
    first.release()
    assert subprocess.run([sys.executable, "-c", TRY_LOCK, str(note)]).returncode == 0, "released: free again"


def damaged_store(path: Path) -> Path:
    """A real SQLite database with pages in the middle overwritten (a crash mid-write, a bad disk)."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE metrics (key TEXT, value REAL, step INTEGER)")
    connection.execute("CREATE INDEX by_key ON metrics (key)")
    connection.executemany("INSERT INTO metrics VALUES (?, ?, ?)", [(f"m{i % 50}", i * 0.5, i) for i in range(5000)])
    connection.commit()
    connection.close()
    check_sqlite_store(path)  # intact: passes
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page:5 * page] = bytes(range(256)) * (2 * page // 256)
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_tracking_store_is_named_with_what_to_do(tmp_path: Path):
    assert sqlite_store_path("sqlite:///mlflow.db", tmp_path) == tmp_path / "mlflow.db"
    assert sqlite_store_path("http://127.0.0.1:5000", tmp_path) is None
    check_sqlite_store(tmp_path / "missing.db")  # MLflow creates it
    store = damaged_store(tmp_path / "mlflow.db")
    with pytest.raises(TrackingStoreError, match=r"mlflow.db is damaged .*nothing has run.*mv .*mlflow.db.damaged"):
        check_sqlite_store(store)


@pytest.mark.slow
def test_a_damaged_mlflow_db_stops_the_run_before_the_first_node(kedro_project: Path):
    """Finding 6: a damaged mlflow.db was found only at the last node, after all the work."""
    damaged_store(kedro_project / "mlflow.db")
    result = kedro(kedro_project, "run", "--env", "test", "--pipeline", "data_episodes", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "mlflow.db is damaged" in output, output[-3000:]
    assert not (kedro_project / "data" / "02_intermediate" / "image_index.csv").exists(), "no node ran"


@pytest.mark.slow
def test_a_run_without_its_environments_generator_names_the_command_that_trains_it(kedro_project: Path):
    result = kedro(kedro_project, "run", "--env", "test", "--pipeline", "tint", check=False)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "data/06_models/test/generator" in output, output[-2000:]
    assert "kedro run --pipeline generator_pretraining --env test" in output
    assert not (kedro_project / "data" / "06_models" / "class_specialisations").exists()
