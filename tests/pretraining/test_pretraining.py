"""A very short pre-training run: losses go down, the result saves/loads and samples."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tint_distill.pretraining import (  # noqa: E402
    PretrainingConfig,
    augment,
    class_fidelity,
    sample_prompts,
    vae_reconstruction_error,
)
from tint_distill.errors import NonFiniteLossError  # noqa: E402
from tint_distill.pretraining.trainer import pretrain_generator  # noqa: E402
from tint_distill.tint import TinySDConfig, load_stable_diffusion  # noqa: E402
from tint_distill.tint.imaging import to_model_tensor  # noqa: E402

DRAWINGS = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "openclipart"
CLASSES = ("boat", "smiley")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _images(name: str, count: int) -> list[Image.Image]:
    out = []
    for file in sorted((DRAWINGS / name).glob("*.png"))[:count]:
        with Image.open(file) as image:
            out.append(image.convert("RGB"))
    return out


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    images, names = [], []
    for name in CLASSES:
        batch = _images(name, 12)
        images += batch
        names += [name] * len(batch)
    config = PretrainingConfig(
        resolution=32, model=TinySDConfig(resolution=32, unet_block_out_channels=(32, 64)),
        vae_steps=60, vae_batch_size=8, vae_learning_rate=3e-3, unet_steps=60, unet_batch_size=16,
        unet_learning_rate=2e-3, latent_augmentations=2, warmup_steps=5, ema_decay=None, snr_gamma=None, seed=0,
    )
    return pretrain_generator(images, names, config), images


def _mean(values):
    return float(np.mean(values))


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_short_pretraining_lowers_both_losses(trained):
    (_, history), _ = trained
    assert history["vae_steps_done"] == 60 and history["unet_steps_done"] == 60
    assert _mean(history["vae_loss"][-10:]) < 0.7 * _mean(history["vae_loss"][:5])
    assert _mean(history["unet_loss"][-15:]) < 0.8 * _mean(history["unet_loss"][:5])
    assert history["classes"] == sorted(CLASSES)
    assert history["scaling_factor"] > 0


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_saves_loads_and_samples(trained, tmp_path):
    (pipeline, history), images = trained
    pipeline.save_pretrained(tmp_path / "model")
    components = load_stable_diffusion(tmp_path / "model")
    assert components.resolution == 32
    assert components.scaling_factor == pytest.approx(history["scaling_factor"])
    assert len(components.tokenizer) == 49408
    assert components.scheduler.config.timestep_spacing == "trailing"
    error = vae_reconstruction_error(components, images[:4])
    assert 0 <= error < 0.5
    samples = sample_prompts(components, ["a drawing of a boat", "a drawing of a smiley"], n_per_prompt=2,
                             seed=1, steps=4)
    assert set(samples) == {"a drawing of a boat", "a drawing of a smiley"}
    for generated in samples.values():
        assert len(generated) == 2 and generated[0].size == (32, 32)
        assert np.isfinite(np.asarray(generated[0], dtype=np.float32)).all()


def test_time_budget_stops_a_stage():
    config = PretrainingConfig(resolution=16, model=TinySDConfig(resolution=16, unet_block_out_channels=(32, 32)),
                               vae_steps=1000, vae_batch_size=2, vae_time_budget=0.0, unet_steps=1000,
                               unet_batch_size=2, unet_time_budget=0.0, latent_augmentations=1)
    _, history = pretrain_generator(_images("boat", 2), ["boat", "boat"], config)
    assert history["vae_steps_done"] == 1 and history["unet_steps_done"] == 1


@pytest.mark.parametrize("stage", ["vae", "unet"])
def test_a_diverging_stage_is_a_generator_pretraining_error(stage):
    lrs = {"vae_learning_rate": float("inf")} if stage == "vae" else {"unet_learning_rate": float("inf")}
    config = PretrainingConfig(resolution=16, model=TinySDConfig(resolution=16, unet_block_out_channels=(32, 32)),
                               vae_steps=3, vae_batch_size=2, unet_steps=3, unet_batch_size=2, latent_augmentations=1,
                               **lrs)
    with pytest.raises(NonFiniteLossError, match=r"generator pre-training \((VAE|UNet)\): non-finite loss") as info:
        pretrain_generator(_images("boat", 2), ["boat", "boat"], config)
    assert info.value.stage == "generator_pretraining" and info.value.part == stage.upper().replace("NET", "Net")
    assert info.value.step == 2


def test_pretraining_leaves_the_callers_random_state_alone():
    config = PretrainingConfig(resolution=16, model=TinySDConfig(resolution=16, unet_block_out_channels=(32, 32)),
                               vae_steps=1, vae_batch_size=2, unet_steps=1, unet_batch_size=2, latent_augmentations=1)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    pretrain_generator(_images("boat", 2), ["boat", "boat"], config)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_augment_keeps_range_and_shape():
    pool = to_model_tensor(_images("boat", 3), 64)
    assert pool.shape == (3, 3, 64, 64)
    out = augment(pool, 32, (0.5, 1.0), True, torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    same = augment(pool, 32, (1.0, 1.0), False, torch.Generator().manual_seed(0))
    reference = torch.nn.functional.interpolate(pool, size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose(same, reference, atol=0.05)


def test_class_fidelity_on_a_hand_built_case():
    generated = {"cat": ["c1", "c2", "x", "c3"], "dog": ["d1", "c4"]}
    classify = lambda images: ["cat" if im.startswith("c") else ("dog" if im.startswith("d") else "bird")  # noqa: E731
                               for im in images]
    result = class_fidelity(generated, classify)
    assert result["per_class"] == {"cat": 0.75, "dog": 0.5}
    assert result["overall"] == pytest.approx(4 / 6)
    assert result["chance"] == 0.5 and result["n_images"] == 6
    with pytest.raises(ValueError):
        class_fidelity({}, classify)
