import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from tint_distill.datasets import DiffusersModelDataset, ImageSetDataset
from tint_distill.work import Deferred


def _pipeline(folder: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)


def test_generator_node_output_round_trips_through_the_catalog(tiny_generator: Path, tmp_path: Path):
    dataset = DiffusersModelDataset(path=str(tmp_path / "generator"))
    assert not dataset.exists()
    dataset.save(_pipeline(tiny_generator))
    assert dataset.exists() and dataset.load() == tmp_path / "generator"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder is left behind"


def test_trained_model_is_cached_by_fingerprint(tiny_generator: Path, tmp_path: Path):
    dataset = DiffusersModelDataset(path=str(tmp_path / "generator"))
    calls = []

    def train(tag: str):
        calls.append(tag)
        return _pipeline(tiny_generator), {"fingerprint": tag.split("-")[0], "note": tag}

    dataset.save(Deferred("aaa", lambda: train("aaa")))
    assert calls == ["aaa"] and dataset.stored_fingerprint() == "aaa"
    record = json.loads((tmp_path / "generator" / "training_record.json").read_text())
    assert record == {"fingerprint": "aaa", "note": "aaa"}

    dataset.save(Deferred("aaa", lambda: train("aaa-again")))
    assert calls == ["aaa"], "same fingerprint: not trained again"
    forced = Deferred("aaa", lambda: train("aaa-forced"), force=True)
    dataset.save(forced)
    assert calls == ["aaa", "aaa-forced"], "retrain asked for"
    dataset.save(forced)  # saved already, inside its node's clock (NodeClock): Kedro's own save does nothing
    assert calls == ["aaa", "aaa-forced"], "trained once per run, even when forced"
    dataset.save(Deferred("bbb", lambda: train("bbb")))
    assert calls[-1] == "bbb" and dataset.stored_fingerprint() == "bbb", "changed data or settings: trained again"
    assert dataset.load() == tmp_path / "generator"

    # Finding 1: a model trained for hours was deleted by a run on other data. Replaced ones are kept...
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("generator.previous-"))
    assert len(kept) == 2 and all(name.startswith("generator.previous-aaa") for name in kept)
    assert json.loads((tmp_path / kept[0] / "training_record.json").read_text())["fingerprint"] == "aaa"
    # ... and going back restores one instead of training again.
    dataset.save(Deferred("aaa", lambda: train("aaa-back")))
    assert calls[-1] == "bbb" and dataset.stored_fingerprint() == "aaa", "restored, not retrained"
    assert (tmp_path / "generator.previous-bbb" / "model_index.json").is_file(), "the one it replaced is kept"
    assert _pipeline(dataset.load()) is not None


def test_read_only_model_folder_is_never_overwritten(tiny_generator: Path, tmp_path: Path):
    user_model = tmp_path / "sd15"
    shutil.copytree(tiny_generator, user_model)
    dataset = DiffusersModelDataset(path=str(user_model), read_only=True)
    assert dataset.load() == user_model
    with pytest.raises(DatasetError, match="read-only model folder"):
        dataset.save(user_model)


def test_incomplete_and_hub_id_model_folders(tiny_generator: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_generator, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(DatasetError, match="incomplete: missing vae/"):
        DiffusersModelDataset(path=str(broken)).load()
    with pytest.raises(DatasetError, match="looks like a Hugging Face Hub id, but downloads are impossible"):
        DiffusersModelDataset(path="runwayml/stable-diffusion-v1-5").load()


def test_image_set_round_trip(embedded_root: Path, tmp_path: Path):
    from PIL import Image

    images = [Image.open(p).convert("RGB").resize((40, 30)) for p in sorted((embedded_root / "fish").glob("*.png"))[:3]]
    dataset = ImageSetDataset(filepath=str(tmp_path / "set"))
    dataset.save(images)
    dataset.save(images[:2])  # a new save replaces the folder
    loaded = dataset.load()
    assert len(loaded) == 2 and [im.size for im in loaded] == [im.size for im in images[:2]]
    assert np.array_equal(np.asarray(loaded[0]), np.asarray(images[0]))


def test_saved_model_folder_gets_the_mode_mkdir_would_give(tiny_generator: Path, tmp_path: Path):
    private_copy = tmp_path / "private"
    shutil.copytree(tiny_generator, private_copy)
    private_copy.chmod(0o700)  # copying must not carry this over either
    old_umask = os.umask(0o022)
    try:
        trained = DiffusersModelDataset(path=str(tmp_path / "generator"))
        trained.save(_pipeline(tiny_generator))  # staged in a 0700 temporary folder
        assert stat.S_IMODE((tmp_path / "generator").stat().st_mode) == 0o755
        os.umask(0o002)
        copied = DiffusersModelDataset(path=str(tmp_path / "copied"))
        copied.save(private_copy)
        assert stat.S_IMODE((tmp_path / "copied").stat().st_mode) == 0o775
    finally:
        os.umask(old_umask)
