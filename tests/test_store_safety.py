"""What keeps saved work safe outside the partition store: the run lock and the MLflow store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import kedro
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
    result = kedro(kedro_project, "run", "--env", "test", "--pipelines", "data_episodes", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "mlflow.db is damaged" in output, output[-3000:]
    assert not (kedro_project / "data" / "02_intermediate" / "image_index.csv").exists(), "no node ran"


@pytest.mark.slow
def test_a_run_without_its_environments_generator_names_the_command_that_trains_it(kedro_project: Path):
    result = kedro(kedro_project, "run", "--env", "test", "--pipelines", "tint", check=False)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "data/06_models/test/generator" in output, output[-2000:]
    assert "kedro run --pipelines generator_pretraining --env test" in output
    assert not (kedro_project / "data" / "06_models" / "class_specialisations").exists()


def test_a_store_left_with_a_hot_journal_by_a_killed_run_is_not_damaged(tmp_path: Path):
    """A run killed mid-write leaves mlflow.db-journal; SQLite rolls it back on open: no false alarm."""
    store = tmp_path / "mlflow.db"
    connection = sqlite3.connect(store)
    connection.execute("CREATE TABLE runs (id INTEGER, name TEXT)")
    connection.executemany("INSERT INTO runs VALUES (?, ?)", [(i, "x" * 200) for i in range(2000)])
    connection.commit()
    writer = subprocess.Popen([sys.executable, "-c", HALF_WRITE, str(store)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()  # mid-transaction: the journal stays
    writer.wait()
    assert store.with_name("mlflow.db-journal").exists()
    check_sqlite_store(store)
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone() == (2000,), "rolled back"


HALF_WRITE = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1])
connection.execute("PRAGMA cache_size=1")
connection.execute("BEGIN")
connection.execute("UPDATE runs SET name = 'y' || name")
print("writing", flush=True)
time.sleep(60)
"""


def test_where_a_folder_cannot_be_locked_the_lock_file_is_locked_instead(tmp_path: Path, monkeypatch, caplog):
    """NFS refuses an exclusive flock on a folder (opened read-only): the run still gets a lock."""
    import errno
    import os
    import stat

    from tint_distill import locks

    real_flock = locks.fcntl.flock

    def nfs_flock(fd, operation):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", nfs_flock)
    note = tmp_path / "data" / ".run.lock"
    first, second = FolderLock(note), FolderLock(note)
    assert first.try_acquire({"pipelines": ["first"]}) and first.holder()["pipelines"] == ["first"]
    assert "do not delete it while a run works" in caplog.text
    assert not second.try_acquire({"pipelines": ["second"]}), "still one run at a time"
    first.release()
    assert second.try_acquire({"pipelines": ["second"]})
    second.release()
