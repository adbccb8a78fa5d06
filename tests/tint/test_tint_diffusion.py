"""The forward-diffusion helpers give diffusers' numbers exactly."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from tint_distill.tint.diffusion import add_noise, noise_level, velocity
from tint_distill.tint.models import SD1_SCHEDULER_CONFIG


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DDPMScheduler])
def test_add_noise_and_velocity_equal_the_schedulers(scheduler_class, dtype):
    config = dict(SD1_SCHEDULER_CONFIG)
    if scheduler_class is DDPMScheduler:
        config.pop("set_alpha_to_one")
    scheduler = scheduler_class(**config)
    rng = torch.Generator().manual_seed(0)
    latents = torch.randn(16, 4, 8, 8, generator=rng, dtype=dtype)
    noise = torch.randn(16, 4, 8, 8, generator=rng, dtype=dtype)
    timesteps = torch.randint(1000, (16,), generator=rng)
    alpha = noise_level(scheduler.alphas_cumprod.to(dtype), timesteps)
    assert alpha.shape == (16, 1, 1, 1)
    assert torch.equal(add_noise(latents, noise, alpha), scheduler.add_noise(latents, noise, timesteps))
    assert torch.equal(velocity(latents, noise, alpha), scheduler.get_velocity(latents, noise, timesteps))
