"""DDIM inversion and null-text inversion, batched and one image at a time."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tint_distill.tint import (NonFiniteLossError, ddim_invert, null_text_invert,
                               null_text_invert_sequential, reconstruct, reconstruct_latents)
from tint_distill.tint.diffusion import decode_latents, encode_images, encode_prompts, guided_denoise, make_schedule

PROMPT = "A photo of an fish"


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()) ** 2).mean())


def test_ddim_inversion_pivots(shared_components, supports, nti_config):
    c = shared_components
    latents = encode_images(c, supports)
    cond = encode_prompts(c, [PROMPT])
    pivots = ddim_invert(c, latents, cond, num_steps=nti_config.num_steps)
    assert len(pivots) == nti_config.num_steps + 1
    assert torch.equal(pivots[0], latents)
    # Each pivot is one exact DDIM step above the previous one: stepping down with the same
    # noise prediction (made at the lower pivot) returns it.
    schedule = make_schedule(c, nti_config.num_steps)
    from tint_distill.tint.diffusion import unet_eps

    k = len(schedule) - 1
    with torch.no_grad():
        eps = unet_eps(c, schedule, k, pivots[0], cond.expand(3, -1, -1))
    assert torch.allclose(schedule.step(k, pivots[1], eps), pivots[0], atol=1e-5)


def test_null_text_beats_plain_ddim_inversion(shared_components, supports, nti_config):
    c = shared_components
    result = null_text_invert(c, supports, PROMPT, config=nti_config)
    assert result.inverted_latents.shape == (3, 4, 8, 8)
    assert result.null_embeddings.shape == (3, nti_config.num_steps, 77, 32)
    assert result.inner_steps.shape == (3, nti_config.num_steps)

    # Plain DDIM inversion, then guided sampling (CFG 7.5) with the "" embedding.
    latents = encode_images(c, supports)
    cond, empty = encode_prompts(c, [PROMPT]), encode_prompts(c, [""])
    pivots = ddim_invert(c, latents, cond, num_steps=nti_config.num_steps)
    assert torch.allclose(pivots[-1], result.inverted_latents, atol=1e-6)
    with torch.no_grad():
        plain = guided_denoise(c, make_schedule(c, nti_config.num_steps), pivots[-1], cond, empty,
                               nti_config.guidance_scale)
    nti = reconstruct_latents(c, result.inverted_latents, result.null_embeddings, PROMPT, config=nti_config)
    # Compared in latent space: the support's latent is what the inversion can reproduce (a
    # random-weight VAE cannot render the support itself). Plain inversion drifts under CFG 7.5.
    assert _mse(nti, latents) < 0.8 * _mse(plain, latents)
    assert (result.final_mse[:, 0] < 0.8 * _step_mse_without_optimisation(c, supports, nti_config)).all()
    images = reconstruct(c, result.inverted_latents, result.null_embeddings, PROMPT, config=nti_config)
    assert images.shape == supports.shape and images.min() >= -1 and images.max() <= 1
    assert torch.allclose(images, decode_latents(c, nti).cpu(), atol=1e-5)
    # the inversion keeps where its guided walk ended: exactly what sampling at alpha = 0 rebuilds
    assert torch.allclose(result.reconstructed_latents, nti.cpu(), atol=1e-3)  # batch rounding


def _step_mse_without_optimisation(c, supports, config) -> torch.Tensor:
    """Per support, the first guided step's MSE to its pivot with the plain "" embedding."""
    plain = null_text_invert(c, supports, PROMPT, config=dataclasses.replace(config, inner_steps=0))
    assert int(plain.inner_steps.sum()) == 0
    return plain.final_mse[:, 0]


def test_batched_equals_one_at_a_time(shared_components, supports, nti_config):
    c = shared_components
    # A threshold between the supports' first losses: one support stops at once, the others
    # keep optimising (each support's own early stop).
    first = _step_mse_without_optimisation(c, supports, dataclasses.replace(nti_config, num_steps=4)).sort().values
    assert first[1] > 1.01 * first[0], "the supports must differ"
    config = dataclasses.replace(nti_config, num_steps=4, early_stop_mse=float(first[0] * first[1]) ** 0.5)
    batched = null_text_invert(c, supports, PROMPT, config=config)
    single = null_text_invert_sequential(c, supports, PROMPT, config=config)
    assert torch.equal(batched.inner_steps, single.inner_steps)
    assert len(set(batched.inner_steps[:, 0].tolist())) > 1, "the test needs differing early stops"
    assert torch.allclose(batched.inverted_latents, single.inverted_latents, atol=1e-5)
    # float32: batched and single convolutions round differently; Adam amplifies that a little
    assert torch.allclose(batched.null_embeddings, single.null_embeddings, atol=5e-2)
    a = reconstruct_latents(c, batched.inverted_latents, batched.null_embeddings, PROMPT, config=config)
    b = reconstruct_latents(c, single.inverted_latents, single.null_embeddings, PROMPT, config=config)
    assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)


def test_batched_equals_one_at_a_time_in_float64(model_dir, supports, nti_config):
    """In double precision the two paths agree to rounding: the same mathematics."""
    from tint_distill.tint import load_stable_diffusion

    c = load_stable_diffusion(model_dir, dtype=torch.float64)
    config = dataclasses.replace(nti_config, num_steps=3, inner_steps=4)
    images = supports.double()
    batched = null_text_invert(c, images, PROMPT, config=config)
    single = null_text_invert_sequential(c, images, PROMPT, config=config)
    chunked = null_text_invert(c, images, PROMPT, config=dataclasses.replace(config, batch_size=2))
    for other in (single, chunked):
        assert torch.allclose(batched.null_embeddings, other.null_embeddings, atol=1e-6, rtol=0)
        assert torch.allclose(batched.inverted_latents, other.inverted_latents, atol=1e-9, rtol=0)


def test_early_stop_everywhere_gives_plain_inversion(shared_components, supports, nti_config):
    c = shared_components
    config = dataclasses.replace(nti_config, num_steps=3, early_stop_mse=1e9)
    calls = []
    result = null_text_invert(c, supports, PROMPT, config=config, progress=lambda *args: calls.append(args))
    assert [(stage, step, total) for stage, step, total, _ in calls] == [("null-text inversion", k, 3) for k in (1, 2, 3)]
    assert int(result.inner_steps.sum()) == 0
    empty = encode_prompts(c, [""])[0]
    assert torch.equal(result.null_embeddings, empty.expand_as(result.null_embeddings))


def test_non_finite_loss_is_reported(shared_components, supports, nti_config):
    config = dataclasses.replace(nti_config, num_steps=3, learning_rate=float("inf"))
    with pytest.raises(NonFiniteLossError, match="null-text inversion.*step 1, inner step 2") as info:
        null_text_invert(shared_components, supports, PROMPT, config=config)
    assert (info.value.stage, info.value.step, info.value.inner_step) == ("null_text_inversion", 1, 2)
