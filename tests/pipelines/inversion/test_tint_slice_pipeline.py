"""The expensive slice of the experiment (inversion -> synthesis -> distillation) on an in-memory
catalog with the real resumable stores: what each stage saves, what a rerun reuses, and what a
changed setting recomputes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tint_distill.data import sources
from tint_distill.datasets import ResumableImageSetsDataset, ResumablePartitionedDataset
from tint_distill.distill.distillation import DistillationConfig
from tint_distill.distill.student import StudentSettings
from tint_distill.distill.teacher import TeacherSettings
from tint_distill.execution import ExecutionSettings
from tint_distill.methods import MinedRealSettings, RealUnlabeledSettings
from tint_distill.pipelines import distillation, inversion, synthesis
from tint_distill.stages.inversion import InversionSettings
from tint_distill.stages.synthesis import PreviewSettings, SynthesisSettings

from tests.conftest import episode_table

METHODS = ["supports_only", "textual_inversion", "tint", "real_unlabeled"]



def stores(root: Path) -> dict:
    return {
        "class_specialisations": ResumablePartitionedDataset(path=str(root / "specialisations"),
                                                             dataset="tint_distill.datasets.SpecialisationDataset",
                                                             filename_suffix=".safetensors"),
        "synthetic_images": ResumableImageSetsDataset(path=str(root / "synthetic"),
                                                      dataset="tint_distill.datasets.ImageSetDataset"),
        "teacher_outputs": ResumablePartitionedDataset(path=str(root / "teacher"),
                                                       dataset="tint_distill.datasets.TensorDictDataset",
                                                       filename_suffix=".safetensors"),
        "student_results": ResumablePartitionedDataset(path=str(root / "students"),
                                                       dataset="tint_distill.datasets.StudentResultDataset",
                                                       filename_suffix=".json"),
    }


def run(tiny_generator: Path, folder: Path, root: Path, alpha: float = 0.5) -> dict:
    images = sources.image_folder(folder)
    catalog = DataCatalog({"raw_images": MemoryDataset(images), "generator": MemoryDataset(tiny_generator),
                           "episodes": MemoryDataset(episode_table(folder, queries=2)),
                           "image_index": MemoryDataset(images.index), "mined_real_images": MemoryDataset(None),
                           "base_student": MemoryDataset(None), **stores(root)})
    params = {
        "inversion": InversionSettings(device="cpu", textual_inversion={"num_steps": 3},
                                       null_text={"num_steps": 3, "inner_steps": 2}),
        "synthesis": SynthesisSettings(images_per_class=3, batch_size=3, alpha=alpha, device="cpu"),
        "synthesis_preview": PreviewSettings(n_episodes=1, n_images=2, cell_size=24),
        "execution": ExecutionSettings(), "methods": METHODS,
        "teacher": TeacherSettings(batch_size=8), "student": StudentSettings(init="scratch"),
        "distillation": DistillationConfig(epochs=1, batch_size=8, image_size=32),
        "real_unlabeled": RealUnlabeledSettings(images_per_class=2), "mined_real": MinedRealSettings(),
        "synthesis.images_per_class": 3,
    }
    for name, value in params.items():
        catalog[f"params:{name}"] = value
    pipeline = (inversion.create_pipeline() + synthesis.create_pipeline() + distillation.create_pipeline())
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog[name].load() for name in stores(root)}


def saved_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "saved partition" in r.getMessage()]


@pytest.mark.slow
def test_slice_saves_every_unit_reuses_them_and_recomputes_what_a_setting_changes(
        tiny_generator: Path, small_folder: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO)
    first = run(tiny_generator, small_folder, tmp_path)
    assert sorted(first["class_specialisations"]) == ["episode_0000/clock", "episode_0000/fish"]
    assert sorted(first["synthetic_images"]) == [f"{s}/episode_0000/{c}" for s in ("textual_inversion", "tint")
                                                 for c in ("clock", "fish")]
    assert all(len(first["synthetic_images"][k]()) == 3 for k in first["synthetic_images"])
    assert sorted(first["student_results"]) == sorted(f"{m}/episode_0000" for m in METHODS)
    outputs = first["teacher_outputs"]["episode_0000"]()
    assert outputs["tint.logits"].shape == (6, 2) and outputs["real_unlabeled.logits"].shape == (4, 2)
    assert "supports_only.logits" not in outputs
    result = first["student_results"]["tint/episode_0000"]()
    assert result["n_unlabeled"] == 6 and result["n_queries"] == 4
    assert result["accuracy"] == sum(p == t for p, t in zip(result["query_predictions"], [0, 0, 1, 1])) / 4
    assert len(saved_lines(caplog)) == 2 + 4 + 1 + 4

    caplog.clear()
    again = run(tiny_generator, small_folder, tmp_path)
    assert saved_lines(caplog) == [], "a rerun with the same inputs reuses every partition"
    for name in first:
        assert {k: v.fingerprint for k, v in again[name].items()} == {k: v.fingerprint for k, v in first[name].items()}

    caplog.clear()
    changed = run(tiny_generator, small_folder, tmp_path, alpha=0.8)
    recomputed = saved_lines(caplog)
    assert not any("specialisations" in line for line in recomputed), "alpha does not change a specialisation"
    assert sum("synthetic" in line for line in recomputed) == 4
    assert sum("teacher" in line for line in recomputed) == 1 and sum("students" in line for line in recomputed) == 4
    assert changed["student_results"]["supports_only/episode_0000"].fingerprint != \
        first["student_results"]["supports_only/episode_0000"].fingerprint, "students chain on the teacher's outputs"
