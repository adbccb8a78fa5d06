"""DDIM inversion and null-text inversion (Mokady et al. 2023), batched over support images.

All K supports of a class go through the UNet together. Each support has its own null
embedding rows and its own early stop: once its MSE is below the threshold it is no longer
evaluated nor updated (its rows are held fixed), so the result equals inverting each support
alone (:func:`null_text_invert_sequential`, which runs the same per-timestep code with K = 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .diffusion import (DDIMSchedule, decode_latents, encode_images, encode_prompts, guided_denoise,
                        make_schedule, unet_eps)
from .errors import NonFiniteLossError
from .models import SDComponents
from .progress import Progress, Reporter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NullTextConfig:
    """Null-text inversion settings; defaults are the reference implementation's."""

    num_steps: int = 25
    guidance_scale: float = 7.5
    inner_steps: int = 10
    learning_rate: float = 1e-2
    early_stop_mse: float = 1e-5
    timestep_spacing: str = "trailing"
    batch_size: int | None = None  # supports per UNet batch; None: all of them (memory bound on big models)

    def __post_init__(self) -> None:
        if self.num_steps < 1 or self.inner_steps < 0:
            raise ValueError("num_steps must be >= 1 and inner_steps >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1 or None")


@dataclass
class NullTextResult:
    """Per support: zT, the S optimised null embeddings, inner-step counts and final MSEs.

    ``inverted_latents`` (K, C, h, w) and ``null_embeddings`` (K, S, L, D) are float32 on the
    CPU; ``inner_steps`` (K, S) counts optimiser updates; ``final_mse`` (K, S) is the MSE
    between each guided step's result and its pivot; ``timesteps`` are the S timesteps.
    """

    inverted_latents: torch.Tensor
    null_embeddings: torch.Tensor
    inner_steps: torch.Tensor
    final_mse: torch.Tensor
    timesteps: tuple[int, ...]


def ddim_invert(components: SDComponents, latents: torch.Tensor, prompt_embeds: torch.Tensor, *,
                num_steps: int, timestep_spacing: str = "trailing",
                schedule: DDIMSchedule | None = None) -> list[torch.Tensor]:
    """Deterministic DDIM inversion with the conditional embedding only.

    Returns the S + 1 pivots ``[z0, z1, ..., zT]`` (each (K, C, h, w)); ``prompt_embeds`` is
    (K or 1, L, D).
    """
    schedule = schedule or make_schedule(components, num_steps, timestep_spacing)
    batch = latents.shape[0]
    cond = prompt_embeds.expand(batch, -1, -1)
    pivots = [latents]
    with torch.no_grad():
        for k in reversed(range(len(schedule))):
            current = pivots[-1]
            pivots.append(schedule.invert_step(k, current, unet_eps(components, schedule, k, current, cond)))
    return pivots


def _optimise_null_step(components: SDComponents, schedule: DDIMSchedule, k: int, config: NullTextConfig,
                        latents: torch.Tensor, target: torch.Tensor, cond: torch.Tensor,
                        null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise the null embeddings (K, L, D) of timestep ``k`` so the guided step lands on ``target``.

    Returns ``(null, next_latents, updates (K,), mse (K,))``. Each support stops on its own
    when its MSE is below ``config.early_stop_mse`` (checked before each update).
    """
    g = config.guidance_scale
    count = latents.shape[0]
    with torch.no_grad():
        eps_cond = unet_eps(components, schedule, k, latents, cond)
    work_dtype = torch.float64 if components.dtype == torch.float64 else torch.float32
    param = null.detach().to(work_dtype).clone().requires_grad_(True)
    held = param.detach().clone()  # values of supports that have stopped
    active = torch.ones(count, dtype=torch.bool)
    updates = torch.zeros(count, dtype=torch.long)
    optimizer = torch.optim.Adam([param], lr=config.learning_rate)
    # A support that stops early keeps the guided step it was judged on: no extra UNet call.
    next_latents = torch.empty_like(latents)
    final_mse = torch.zeros(count)
    finished = torch.zeros(count, dtype=torch.bool)
    with torch.enable_grad():
        for inner in range(1, config.inner_steps + 1):
            index = active.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            dev_index = index.to(latents.device)
            sub_latents = latents[dev_index]
            eps_uncond = unet_eps(components, schedule, k, sub_latents, param[dev_index])
            eps = eps_uncond + g * (eps_cond[dev_index] - eps_uncond)
            stepped = schedule.step(k, sub_latents, eps)
            mse = ((stepped.float() - target[dev_index].float()) ** 2).flatten(1).mean(1)
            values = mse.detach().cpu()
            bad = ~torch.isfinite(values)
            if bad.any():
                raise NonFiniteLossError("null-text inversion", k + 1, float(values[bad][0]), inner_step=inner,
                                         detail=f"support {int(index[bad][0])}, timestep {schedule.timesteps[k]}")
            done = values < config.early_stop_mse
            if done.any():
                stopped = index[done]
                held[stopped.to(held.device)] = param.detach()[stopped.to(held.device)]
                next_latents[stopped.to(latents.device)] = stepped.detach()[done.to(stepped.device)]
                final_mse[stopped] = values[done]
                finished[stopped] = True
                active[stopped] = False
                if done.all():
                    break
            optimizer.zero_grad(set_to_none=True)
            mse[~done.to(mse.device)].sum().backward()  # a sum: each support gets its own gradient
            optimizer.step()
            updates[index[~done]] += 1
            if (~active).any():
                with torch.no_grad():
                    frozen = (~active).to(param.device)
                    param[frozen] = held[frozen]
    null = param.detach()
    rest = (~finished).nonzero().squeeze(1)
    if rest.numel():
        dev_rest = rest.to(latents.device)
        with torch.no_grad():
            eps_uncond = unet_eps(components, schedule, k, latents[dev_rest], null[dev_rest])
            stepped = schedule.step(k, latents[dev_rest], eps_uncond + g * (eps_cond[dev_rest] - eps_uncond))
            next_latents[dev_rest] = stepped
            final_mse[rest] = ((stepped.float() - target[dev_rest].float()) ** 2).flatten(1).mean(1).cpu()
    return null, next_latents, updates, final_mse


def _invert_batch(components: SDComponents, latents: torch.Tensor, cond: torch.Tensor,
                  null_init: torch.Tensor, config: NullTextConfig, schedule: DDIMSchedule,
                  reporter: Reporter | None, step_offset: int = 0) -> NullTextResult:
    """Null-text inversion of a batch of latents (K, C, h, w) with cond (K, L, D)."""
    pivots = ddim_invert(components, latents, cond, num_steps=len(schedule), schedule=schedule)
    steps = len(schedule)
    current = pivots[-1]
    null = null_init
    nulls, updates, mses = [], [], []
    for k in range(steps):
        null, current, count, mse = _optimise_null_step(components, schedule, k, config, current,
                                                        pivots[steps - 1 - k], cond, null)
        nulls.append(null.float().cpu())
        updates.append(count)
        mses.append(mse)
        if reporter is not None:
            reporter.update(step_offset + k + 1, mse=float(mse.max()), inner=int(count.max()))
    return NullTextResult(
        inverted_latents=pivots[-1].float().cpu(),
        null_embeddings=torch.stack(nulls, dim=1),
        inner_steps=torch.stack(updates, dim=1),
        final_mse=torch.stack(mses, dim=1),
        timesteps=schedule.timesteps,
    )


def _prepare(components: SDComponents, images: torch.Tensor, prompt: str,
             config: NullTextConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DDIMSchedule]:
    latents = encode_images(components, images)
    embeds = encode_prompts(components, [prompt, ""])
    schedule = make_schedule(components, config.num_steps, config.timestep_spacing)
    return latents, embeds[:1], embeds[1:], schedule


def _invert_in_chunks(components: SDComponents, images: torch.Tensor, prompt: str, config: NullTextConfig,
                      chunk: int, progress: Progress, stage: str) -> NullTextResult:
    """Invert the supports ``chunk`` at a time (each chunk in one batch) and concatenate."""
    latents, cond, empty, schedule = _prepare(components, images, prompt, config)
    count = latents.shape[0]
    chunk = max(1, min(chunk, count))
    results = []
    starts = range(0, count, chunk)
    with Reporter(stage, config.num_steps * len(starts), progress, log_every=5, logger=logger) as reporter:
        for n, start in enumerate(starts):
            part = latents[start:start + chunk]
            size = part.shape[0]
            results.append(_invert_batch(components, part, cond.expand(size, -1, -1), empty.expand(size, -1, -1),
                                         config, schedule, reporter, step_offset=n * config.num_steps))
    return NullTextResult(
        inverted_latents=torch.cat([r.inverted_latents for r in results]),
        null_embeddings=torch.cat([r.null_embeddings for r in results]),
        inner_steps=torch.cat([r.inner_steps for r in results]),
        final_mse=torch.cat([r.final_mse for r in results]),
        timesteps=schedule.timesteps,
    )


def null_text_invert(components: SDComponents, images: torch.Tensor, prompt: str, *,
                     config: NullTextConfig = NullTextConfig(), progress: Progress = None) -> NullTextResult:
    """Null-text inversion of the K supports ``images`` (K, 3, R, R) in [-1, 1], batched.

    All supports go through the UNet together (``config.batch_size`` at a time if set, to
    bound memory); each keeps its own null embeddings and early stop.
    """
    chunk = config.batch_size or images.shape[0]
    return _invert_in_chunks(components, images, prompt, config, chunk, progress, "null-text inversion")


def null_text_invert_sequential(components: SDComponents, images: torch.Tensor, prompt: str, *,
                                config: NullTextConfig = NullTextConfig(),
                                progress: Progress = None) -> NullTextResult:
    """Reference path: the same inversion, one support image at a time."""
    return _invert_in_chunks(components, images, prompt, config, 1, progress, "null-text inversion (sequential)")


def reconstruct_latents(components: SDComponents, inverted_latents: torch.Tensor, null_embeddings: torch.Tensor,
                        prompt: str, *, config: NullTextConfig = NullTextConfig()) -> torch.Tensor:
    """Guided DDIM from each zT with its per-timestep null embeddings; returns the z0 latents."""
    schedule = make_schedule(components, null_embeddings.shape[1], config.timestep_spacing)
    cond = encode_prompts(components, [prompt])
    with torch.inference_mode():
        latents = inverted_latents.to(components.device, components.dtype)
        nulls = null_embeddings.to(components.device)
        return guided_denoise(components, schedule, latents, cond, nulls, config.guidance_scale)


def reconstruct(components: SDComponents, inverted_latents: torch.Tensor, null_embeddings: torch.Tensor,
                prompt: str, *, config: NullTextConfig = NullTextConfig()) -> torch.Tensor:
    """Reconstruct the supports from their inversion: images (K, 3, R, R) in [-1, 1], float32."""
    latents = reconstruct_latents(components, inverted_latents, null_embeddings, prompt, config=config)
    return decode_latents(components, latents).cpu()
