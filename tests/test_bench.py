"""`make bench` keeps working: its CPU sections on tiny settings, and its GPU section (which no CI
machine can run) on a small model on the CPU."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import PROJECT_ROOT
from tests.tint.conftest import one_thread

pytestmark = pytest.mark.xdist_group("ray")  # one Ray cluster at a time: the tests check for leftover Ray processes


def _bench(name: str = "bench_tint"):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_benchmark_compares_paths_that_learn_the_same_embeddings(tmp_path):
    with one_thread():  # the benchmark sets its thread count: put it back after
        report = _bench().main(["--threads", "1", "--ti-steps", "2", "--episode-ti-steps", "2", "--steps", "2",
                                "--skip", "precision", "attention", "generation", "sd15",
                                "--output", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text())["textual_inversion"] == report["textual_inversion"]
    for section in ("textual_inversion", "episode_specialisation"):
        assert set(report[section]["seconds"]) == {"reference", "per_class", "grouped"}
        assert report[section]["speedup_grouped_vs_per_class"] > 0
    assert report["textual_inversion"]["max_abs_diff_embedding"]["grouped_vs_reference"] < 1e-5


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_gpu_section_runs_on_a_small_model():
    from tint_distill.tint import TinySDConfig

    report = _bench().bench_sd15(torch.device("cpu"), config=TinySDConfig(), ti_steps=2, nti_supports=2,
                                 nti_timesteps=1, generation_batches=(2,), generation_precisions=("bf16", "fp16"),
                                 generation_images=2)
    assert report["precision"] == "bf16"
    assert report["generation"]["bf16_batch2"]["images_per_s"] > 0 and report["generation"]["fp16_batch2"]["images_per_s"] > 0
    assert report["specialisation_per_class_at_reference_settings_s"]["total"] > 0


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_execution_benchmark_times_the_same_students_on_each_engine(tmp_path):
    previous = torch.get_num_threads()
    try:
        report = _bench("bench_execution").main(["--episodes", "1", "--epochs", "1", "--repeats", "1",
                                                 "--output", str(tmp_path / "execution.json")])
    finally:
        torch.set_num_threads(previous)
    assert json.loads((tmp_path / "execution.json").read_text()) == report
    assert set(report["best_seconds"]) == {"local", "ray_1_worker", "ray_2_workers"}
    assert report["same_accuracies"], "each engine trains the same students"
    assert report["workload"]["students"] == 2


def test_the_predict_benchmark_classifies_both_folders(tmp_path):
    report = _bench("bench_predict").main(["--images", "40", "--repeats", "1", "--output", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text()) == report
    for folder in ("png_32px", "drawings_as_shipped"):
        assert report[folder]["images"] == 40 and report[folder]["unreadable"] == 0
        assert report[folder]["images_per_s"] > 0


def test_the_reconstruction_benchmark_measures_nti_against_the_vae_bound(tmp_path):
    with one_thread():
        report = _bench("bench_reconstruction").main(["--threads", "1", "--settings", "2x1", "--ti-steps", "1",
                                                      "--output", str(tmp_path / "reconstruction.json")])
    assert report["supports"] == 25 and len(report["classes"]) == 5
    measured = report["null_text"]["2x1"]
    # Each setting's bound is the VAE round trip of the same 25 padded supports, measured apart per class
    # inside the specialisation: it must match the benchmark's own round trip of all of them.
    assert measured["vae_mse"] == pytest.approx(report["vae_mse"]["padded"], rel=1e-4)
    assert measured["ratio"] == pytest.approx(measured["mse"] / report["vae_mse"]["padded"], rel=1e-4)
    assert measured["mse"] > 0 and measured["null_text_seconds"] > 0
    assert 0 < report["vae_mse"]["padded"] and 0 < report["vae_mse"]["stretched"]


@pytest.mark.slow
def test_the_reliability_benchmark_replays_the_quick_scenarios(tmp_path):
    """`make bench` replays every scenario (about 15 minutes); the ones that stop a run at once
    replay here: each must hold."""
    quick = ["damaged_mlflow_db", "crafted_cifar_pickle", "corrupt_image"]
    report = _bench("bench_reliability").main(["--only", ",".join(quick), "--output", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert [row["scenario"] for row in report["scenarios"]] == quick
    failed = [row for row in report["scenarios"] if not row["held"]]
    assert not failed, failed


@pytest.mark.slow  # two episode counts, each run twice through `kedro` (about 2 minutes on 2 cores)
def test_the_scale_rehearsal_reports_the_drivers_share_per_episode(tmp_path):
    report = _bench("bench_scale").main(["--episodes", "2,1", "--output", str(tmp_path / "scale.json")])
    assert json.loads((tmp_path / "scale.json").read_text()) == report
    smallest, largest = report["per_episode_count"]
    assert (smallest["episodes"], largest["episodes"]) == (1, 2)
    for row in report["per_episode_count"]:
        run = row["run"]
        assert 0 < run["unit_s"] < run["node_s"] <= run["pipeline_s"] < run["wall_s"], "units inside nodes inside the run"
        assert row["driver_s_per_episode"] == pytest.approx((run["node_s"] - run["unit_s"]) / row["episodes"], abs=0.02)
        assert run["partitions_computed"] > 0 and run["peak_rss_mib"] > 100
        assert row["written_under_data"]["files"] > 0 and row["written_under_data"]["bytes"] > 0
        assert row["noop_rerun"]["partitions_computed"] == 0 and row["noop_rerun"]["unit_s"] == 0, "everything reused"
    assert largest["written_under_data"]["files"] > smallest["written_under_data"]["files"]
    assert report["overhead_growth"] == pytest.approx(largest["driver_s_per_episode"] / smallest["driver_s_per_episode"], rel=0.01)
    assert report["noop_rerun_s_per_episode"] == largest["noop_rerun_s_per_episode"]
    (added,) = report["marginal_driver_s_per_episode"]
    assert added["episodes"] == [1, 2]
    assert added["driver_s_per_episode"] == pytest.approx(largest["run"]["driver_s"] - smallest["run"]["driver_s"], abs=0.02)
