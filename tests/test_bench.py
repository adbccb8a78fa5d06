"""`make bench` keeps working: its CPU sections on tiny settings, and its GPU section (which no CI
machine can run) on a small model on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from tests.conftest import PROJECT_ROOT
from tests.tint.conftest import one_thread


def _bench(name: str = "bench_tint"):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_benchmark_compares_paths_that_learn_the_same_embeddings(tmp_path):
    with one_thread():  # the benchmark sets its thread count: put it back after
        report = _bench().main(["--threads", "1", "--ti-steps", "2", "--episode-ti-steps", "2", "--steps", "2",
                                "--skip", "precision", "attention", "generation",
                                "--output", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text())["textual_inversion"] == report["textual_inversion"]
    for section in ("textual_inversion", "episode_specialisation"):
        assert set(report[section]["seconds"]) == {"reference", "per_class", "grouped"}
        assert report[section]["speedup_grouped_vs_per_class"] > 0
    assert report["textual_inversion"]["max_abs_diff_embedding"]["grouped_vs_reference"] < 1e-5


@pytest.mark.slow  # about 45 s on the 2-core machine (most of it importing diffusers, transformers, timm)
def test_the_gpu_check_runs_every_section_in_smoke_mode(tmp_path):
    """`make bench-gpu` (which no CI machine can run) on tiny models on the CPU: every section
    measures through the project's code, the episode adds them up against the goals."""
    output = tmp_path / "gpu.json"
    with one_thread():
        report = _bench("bench_gpu").main(["--smoke", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report, default=str))
    sections = report["sections"]
    failed = {name: section["error"] for name, section in sections.items() if "error" in section}
    assert not failed, failed
    assert sections["generation"]["best_images_per_s"] > 0
    assert {"batch2", "batch4"} <= set(sections["generation"])
    specialisation = sections["specialisation"]
    assert specialisation["grouped_textual_inversion_steps_per_s"] > 0 and specialisation["null_text_s_per_support"] > 0
    assert specialisation["reference_steps"] == {"textual_inversion": 5000, "null_text": 25, "inner_steps": 10}
    assert sections["teacher"]["images_per_s"] > 0 and sections["student"]["images_per_s"] > 0
    assert sections["student"]["student"] in ("resnet12", "resnet18")
    episode = sections["episode"]
    assert episode["reference"]["images"] == 5000 and episode["episode_s"] > 0
    assert set(episode["goals"]) == {"generation_images_per_s", "specialisation_s_per_class", "episode_s"}
    assert all(goal["pass"] in (True, False) for goal in episode["goals"].values())
    estimate = sections["flop_estimate"]
    assert estimate["what"].startswith("ESTIMATE") and estimate["tflop_per_call"]["unet_forward"] > 0


def test_the_gpu_check_skips_what_its_budget_cannot_hold_and_records_a_failing_section(tmp_path):
    """No budget: every timed section is skipped with a note; the episode says what it lacks."""
    bench = _bench("bench_gpu")
    report = bench.main(["--smoke", "--budget-s", "0", "--sections", "environment", "generation", "episode",
                         "--output", str(tmp_path / "gpu.json")])
    sections = report["sections"]
    assert "skipped" in sections["generation"]
    assert sections["episode"]["episode_s"] is None and "incomplete" in sections["episode"]["note"]
    broken = bench.Report(tmp_path / "broken.json", {"sections": {}})
    broken.run("boom", lambda: 1 / 0)
    broken.run("fine", lambda: {"value": 1})
    saved = json.loads((tmp_path / "broken.json").read_text())["sections"]
    assert saved["boom"]["error"].startswith("ZeroDivisionError") and saved["fine"]["value"] == 1


def test_the_gpu_check_installs_what_it_lacks_at_the_lock_versions():
    pins = _bench("gpu_pins").pins()
    lock = (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
    assert any(pin.startswith("diffusers==") for pin in pins) and any(pin.startswith("open_clip_torch==") for pin in pins)
    assert all(pin in lock for pin in pins), "every package comes at requirements.lock's version"


@pytest.mark.slow  # over 10 s on the 2-core machine
@pytest.mark.xdist_group("ray")  # one Ray cluster at a time: the Ray tests check for leftover Ray processes
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


def test_the_storage_benchmark_writes_both_ways_and_counts_them(tmp_path):
    report = _bench("bench_storage").main(["--images-per-class", "3", "--image-size", "16", "--classes", "2",
                                           "--repeats", "1", "--output", str(tmp_path / "storage.json")])
    assert json.loads((tmp_path / "storage.json").read_text()) == report
    for content in ("drawings", "noise"):
        before, after = report[content]["png_per_image"], report[content]["shard_and_preview"]
        assert before["files"] == 2 * 2 * 3 and after["files"] == 2 * 2 * 2, "per partition: 3 PNGs, or shard + preview"
        assert after["files_at_reference"] == after["files"] * 600
        assert before["load_one_partition_s"] > 0 and after["load_one_partition_s"] > 0


@pytest.mark.slow  # one episode, run twice through `kedro` (about a minute on 2 cores); make bench runs 20,100,400
def test_the_scale_rehearsal_reports_the_drivers_share_per_episode(tmp_path):
    report = _bench("bench_scale").main(["--episodes", "1", "--output", str(tmp_path / "scale.json")])
    assert json.loads((tmp_path / "scale.json").read_text()) == report
    (row,) = report["per_episode_count"]
    run = row["run"]
    assert row["episodes"] == 1
    assert 0 < run["unit_s"] < run["node_s"] <= run["pipeline_s"] < run["wall_s"], "units inside nodes inside the run"
    assert row["driver_s_per_episode"] == pytest.approx(run["node_s"] - run["unit_s"], abs=0.02)
    assert run["partitions_computed"] > 0 and run["peak_rss_mib"] > 100
    assert row["written_under_data"]["files"] > 0 and row["written_under_data"]["bytes"] > 0
    assert row["noop_rerun"]["partitions_computed"] == 0 and row["noop_rerun"]["unit_s"] == 0, "everything reused"
    assert report["noop_rerun_s_per_episode"] == row["noop_rerun_s_per_episode"] > 0
    assert report["overhead_growth"] == 1.0 and report["marginal_driver_s_per_episode"] == []
