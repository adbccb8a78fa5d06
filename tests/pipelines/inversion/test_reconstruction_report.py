"""The inversion report reads the specialisations' JSON sidecars alone, never their tensors (at SD
size ~30 MB of null embeddings per class)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tint_distill.datasets import ResumablePartitionedDataset
from tint_distill.datasets.resumable_partitions import DamagedPartitionError
from tint_distill.pipelines.inversion.nodes import summarise_reconstructions
from tint_distill.tint import ClassSpecialisation
from tint_distill.work import Work


def specialisation(name: str, mse: float, vae_mse: float) -> ClassSpecialisation:
    k, steps, width = 2, 3, 8
    return ClassSpecialisation(
        token=f"<{name}>", init_word=name, token_embedding=torch.randn(width),
        inverted_latents=torch.randn(k, 4, 4, 4), null_embeddings=torch.randn(k, steps, 5, width),
        support_ids=[f"{name}/{i}.png" for i in range(k)],
        diagnostics={"reconstruction": {"mse": mse, "vae_mse": vae_mse, "ratio": mse / vae_mse}})


def test_the_report_reads_only_the_sidecars(tmp_path: Path):
    store = ResumablePartitionedDataset(path=str(tmp_path / "specialisations"),
                                        dataset="tint_distill.datasets.SpecialisationDataset",
                                        filename_suffix=".safetensors")
    measured = {"episode_0000/fish": (0.02, 0.01), "episode_0000/clock": (0.03, 0.01)}
    store.save(Work.of_functions({key: (f"v-{i}", lambda k=key: specialisation(k.split("/")[1], *measured[k]))
                                  for i, key in enumerate(measured)}))
    for tensors in (tmp_path / "specialisations").rglob("*.safetensors"):
        tensors.write_bytes(b"\0" * tensors.stat().st_size)  # the heavy file unreadable, its size unchanged
    stored = store.load()
    with pytest.raises(DamagedPartitionError, match="cannot be read"):
        stored["episode_0000/fish"]()  # reading the tensors now fails: a report that read them would too

    report, metrics = summarise_reconstructions(stored)
    assert report["classes"]["episode_0000/clock"] == {"mse": 0.03, "vae_mse": 0.01, "ratio": pytest.approx(3.0)}
    assert report["summary"]["ratio_max"] == pytest.approx(3.0) and report["summary"]["classes"] == 2
    assert metrics["inversion.reconstruction_mse_mean"]["value"] == pytest.approx(0.025)
    assert stored["episode_0000/fish"].sidecar()["token"] == "<fish>"
