"""Deterministic DDIM maths and the model calls shared by inversion and sampling.

The DDIM step is written out here (instead of calling ``DDIMScheduler.step``) so that the
forward step and its inversion use exactly the same pair of noise levels: the level after
the last of the S timesteps is the scheduler's final alpha (``alphas_cumprod[0]`` for SD 1.x,
``set_alpha_to_one=False``). The timesteps themselves come from the model's
``DDIMScheduler`` with the requested spacing ("trailing" by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .models import SDComponents
from .tokenizer import prompt_token_ids


@dataclass(frozen=True)
class DDIMSchedule:
    """S sampling timesteps (descending) and the cumulative alphas of each step's two levels.

    Step ``k`` goes from noise level ``timesteps[k]`` (alpha ``alphas[k]``) down to the next
    level (``alphas_prev[k]``: the next timestep's alpha, or the final alpha for the last step).
    """

    timesteps: tuple[int, ...]
    alphas: tuple[float, ...]
    alphas_prev: tuple[float, ...]
    prediction_type: str = "epsilon"

    def __len__(self) -> int:
        return len(self.timesteps)

    def to_eps(self, k: int, latents: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        """Convert the UNet output at step ``k`` to a noise prediction."""
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "v_prediction":
            a = self.alphas[k]
            return math.sqrt(a) * model_output + math.sqrt(1 - a) * latents
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")

    def step(self, k: int, latents: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step (eta = 0) from level ``timesteps[k]`` to the next level."""
        a, a_prev = self.alphas[k], self.alphas_prev[k]
        x0 = (latents - math.sqrt(1 - a) * eps) / math.sqrt(a)
        return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps

    def invert_step(self, k: int, latents: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`step`: from the lower level of step ``k`` up to ``timesteps[k]``.

        ``eps`` is the UNet's prediction at the lower-level latents with timestep
        ``timesteps[k]`` (the usual DDIM-inversion approximation).
        """
        a, a_prev = self.alphas[k], self.alphas_prev[k]
        x0 = (latents - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
        return math.sqrt(a) * x0 + math.sqrt(1 - a) * eps


def noise_level(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The cumulative alpha of each item's timestep, (N, 1, 1, 1): broadcasts over latents (N, C, h, w)."""
    return alphas_cumprod[timesteps].view(-1, 1, 1, 1)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The forward diffusion (DDPM training): ``sqrt(a) z0 + sqrt(1 - a) noise`` at noise level
    ``alpha`` (:func:`noise_level`). The same numbers as diffusers' ``DDPMScheduler.add_noise`` /
    ``DDIMScheduler.add_noise``, without moving the scheduler's ``alphas_cumprod`` to the device,
    and with the level at hand for the loss weighting or the v-prediction target."""
    return alpha.sqrt() * latents + (1 - alpha).sqrt() * noise


def velocity(latents: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The v-prediction target ``sqrt(a) noise - sqrt(1 - a) z0`` (diffusers' ``get_velocity``)."""
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * latents


def make_schedule(components: SDComponents, num_steps: int,
                  timestep_spacing: str = "trailing") -> DDIMSchedule:
    """The DDIM schedule of ``num_steps`` steps for the model's noise schedule."""
    from diffusers import DDIMScheduler

    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler = DDIMScheduler.from_config(components.scheduler.config, timestep_spacing=timestep_spacing)
    scheduler.set_timesteps(num_steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    if len(set(timesteps)) != len(timesteps) or any(b >= a for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"{num_steps} steps with {timestep_spacing!r} spacing give invalid timesteps {timesteps}")
    cumprod = scheduler.alphas_cumprod.double()
    final = float(scheduler.final_alpha_cumprod)
    alphas = tuple(float(cumprod[t]) for t in timesteps)
    alphas_prev = alphas[1:] + (final,)
    return DDIMSchedule(tuple(timesteps), alphas, alphas_prev, scheduler.config.prediction_type)


def tokenize(components: SDComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids (N, L) padded to the tokenizer's max length, on the components' device."""
    return prompt_token_ids(components.tokenizer, prompts).to(components.device)


def encode_prompts(components: SDComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states (N, L, D) for ``prompts``, in float32 (no gradient), computed in
    the model's precision (as textual inversion trains through it)."""
    with torch.no_grad(), components.autocast():
        return components.text_encoder(tokenize(components, prompts))[0].float()


def unet_eps(components: SDComponents, schedule: DDIMSchedule, k: int, latents: torch.Tensor,
             embeddings: torch.Tensor) -> torch.Tensor:
    """The UNet's noise prediction at step ``k``, in the latents' dtype (the call itself runs in the
    model's precision)."""
    with components.autocast():
        output = components.unet(latents.to(components.dtype), schedule.timesteps[k],
                                 encoder_hidden_states=embeddings.to(components.dtype)).sample
    return schedule.to_eps(k, latents, output.to(latents.dtype))


def guided_eps(components: SDComponents, schedule: DDIMSchedule, k: int, latents: torch.Tensor,
               cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free-guided noise prediction; cond and uncond run in one UNet call.

    ``cond`` and ``uncond`` are (B, L, D) or (1, L, D) (broadcast to the batch).
    """
    batch = latents.shape[0]
    if guidance_scale == 1.0:
        return unet_eps(components, schedule, k, latents, cond.expand(batch, -1, -1))
    embeddings = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
    eps_uncond, eps_cond = unet_eps(components, schedule, k, torch.cat([latents, latents]), embeddings).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def guided_denoise(components: SDComponents, schedule: DDIMSchedule, latents: torch.Tensor,
                   cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Run all S guided DDIM steps from ``latents`` (at ``timesteps[0]``) down to z0.

    ``uncond`` is either one null embedding for every step, (B or 1, L, D), or one per image
    and step, (B, S, L, D) (null-text inversion).
    """
    per_step = uncond.dim() == 4
    if per_step and uncond.shape[1] != len(schedule):
        raise ValueError(f"{uncond.shape[1]} null embeddings per image for {len(schedule)} steps")
    for k in range(len(schedule)):
        null = uncond[:, k] if per_step else uncond
        latents = schedule.step(k, latents, guided_eps(components, schedule, k, latents, cond, null,
                                                       guidance_scale))
    return latents


def check_images(images: torch.Tensor, resolution: int) -> None:
    """Raise ValueError unless ``images`` is a finite (K, 3, R, R) batch at the model resolution."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (K, 3, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"images are {tuple(images.shape[-2:])}, the model needs {resolution}x{resolution}: "
                         "resize them first (tint_distill.tint.imaging.to_model_tensor)")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf values")


def encode_images(components: SDComponents, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """VAE posterior means x scaling factor, (K, C, h, w), in the components' latent dtype."""
    check_images(images, components.resolution)
    out = []
    with torch.no_grad(), components.autocast():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start:start + batch_size].to(components.device, components.dtype)
            mean = components.vae.encode(chunk).latent_dist.mean
            out.append(mean.to(components.latent_dtype) * components.scaling_factor)
    return torch.cat(out)


def decode_latents(components: SDComponents, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (float32) from latents."""
    with torch.no_grad(), components.autocast():
        images = components.vae.decode(latents.to(components.dtype) / components.scaling_factor).sample
    return images.float().clamp(-1, 1)
