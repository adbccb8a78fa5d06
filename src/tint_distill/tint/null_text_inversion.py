"""DDIM inversion and null-text inversion (Mokady et al. 2023), batched over support images.

All supports of a group of classes (an episode, say) go through the UNet together, each with
its own class's prompt (``NullTextConfig.batch_size`` at a time, to bound memory). Each support
has its own null embedding rows and its own early stop: once its MSE is below the threshold it
is no longer evaluated nor updated (its rows are held fixed), so the result equals inverting each
support alone (:func:`null_text_invert_sequential`, the same per-timestep code with one support).
A support whose loss turns NaN/inf is dropped at that inner step; only its class fails.

The early-stop test reads the supports' losses back once per inner step: it decides which
supports the next UNet call holds, and a read-back costs microseconds against that call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .diffusion import (DDIMSchedule, decode_latents, encode_images, encode_prompts, guided_denoise,
                        make_schedule, unet_eps)
from .errors import NonFiniteLossError
from .models import SDComponents
from .progress import Progress, Reporter

from tint_distill.params import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NullTextConfig(Settings):
    """Null-text inversion settings. The defaults are conf/base's ``inversion.null_text``; all but
    ``num_steps`` are the reference implementation's (conf/gpu)."""

    num_steps: int = 16  # DDIM steps; reference: 25
    guidance_scale: float = 7.5
    inner_steps: int = 10
    learning_rate: float = 1e-2
    early_stop_mse: float = 1e-5
    timestep_spacing: str = "trailing"
    batch_size: int | None = None  # supports per UNet batch; None: all of them (memory bound on big models)

    def check(self) -> None:
        if self.num_steps < 1 or self.inner_steps < 0:
            raise ValueError("num_steps must be >= 1 and inner_steps >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1 or None")


@dataclass
class NullTextResult:
    """Per support: zT, the S optimised null embeddings, inner-step counts, final MSEs and the
    reconstruction.

    ``inverted_latents`` (K, C, h, w) and ``null_embeddings`` (K, S, L, D) are float32 on the
    CPU; ``inner_steps`` (K, S) counts optimiser updates; ``final_mse`` (K, S) is the MSE
    between each guided step's result and its pivot; ``reconstructed_latents`` (K, C, h, w) is
    where the guided walk from zT with the optimised null embeddings ends (what sampling at
    alpha = 0 gives, :func:`reconstruct_latents`); ``timesteps`` are the S timesteps.
    """

    inverted_latents: torch.Tensor
    null_embeddings: torch.Tensor
    inner_steps: torch.Tensor
    final_mse: torch.Tensor
    reconstructed_latents: torch.Tensor
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


@dataclass(frozen=True)
class _Failure:
    """Where a support's loss first turned non-finite."""

    step: int  # 1-based timestep index
    inner_step: int
    loss: float
    timestep: int


def _optimise_null_step(components: SDComponents, schedule: DDIMSchedule, k: int, config: NullTextConfig,
                        latents: torch.Tensor, target: torch.Tensor, cond: torch.Tensor, null: torch.Tensor,
                        failed: torch.Tensor, scaler: torch.amp.GradScaler):
    """Optimise the null embeddings (N, L, D) of timestep ``k`` so the guided step lands on ``target``.

    Returns ``(null, next_latents, updates (N,), mse (N,), failures {support: _Failure})``. Each
    support stops on its own when its MSE is below ``config.early_stop_mse`` (checked before each
    update); supports in ``failed`` (N,) bool are not optimised, and a support whose loss turns
    non-finite joins them (``failed`` is updated in place).
    """
    g = config.guidance_scale
    count = latents.shape[0]
    with torch.no_grad():
        eps_cond = unet_eps(components, schedule, k, latents, cond)
    work_dtype = components.latent_dtype  # float32 master copies (float64 for a float64 model)
    param = null.detach().to(work_dtype).clone().requires_grad_(True)
    held = param.detach().clone()  # values of supports that have stopped
    active = ~failed
    updates = torch.zeros(count, dtype=torch.long)
    optimizer = torch.optim.Adam([param], lr=config.learning_rate, fused=True if scaler.is_enabled() else None)
    # A support that stops early keeps the guided step it was judged on: no extra UNet call.
    next_latents = torch.full_like(latents, float("nan"))
    final_mse = torch.full((count,), float("nan"))
    finished = failed.clone()
    failures: dict[int, _Failure] = {}
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
            values = mse.detach().cpu()  # the one read-back of this inner step
            bad = ~torch.isfinite(values)
            for position in bad.nonzero().squeeze(1).tolist():
                support = int(index[position])
                failures[support] = _Failure(k + 1, inner, float(values[position]), schedule.timesteps[k])
            done = (values < config.early_stop_mse) | bad
            if done.any():
                stopped = index[done]
                held[stopped.to(held.device)] = param.detach()[stopped.to(held.device)]
                next_latents[stopped.to(latents.device)] = stepped.detach()[done.to(stepped.device)]
                final_mse[stopped] = values[done]
                finished[stopped] = True
                failed[index[bad]] = True
                active[stopped] = False
                if done.all():
                    break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(mse[~done.to(mse.device)].sum()).backward()  # a sum: each support gets its own gradient
            optimised = torch.zeros(count, dtype=torch.bool)
            optimised[index[~done]] = True
            # a support that just failed may have a NaN gradient (0 x NaN): keep it from the others' step
            param.grad.masked_fill_(~optimised.to(param.device).view(-1, *[1] * (param.dim() - 1)), 0.0)
            scaler.step(optimizer)
            scaler.update()
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
    return null, next_latents, updates, final_mse, failures


def _invert_batch(components: SDComponents, latents: torch.Tensor, cond: torch.Tensor,
                  null_init: torch.Tensor, config: NullTextConfig, schedule: DDIMSchedule,
                  reporter: Reporter | None, step_offset: int = 0) -> tuple[NullTextResult, dict[int, _Failure]]:
    """Null-text inversion of a batch of latents (N, C, h, w) with cond (N, L, D); the failures
    are keyed by position in the batch."""
    pivots = ddim_invert(components, latents, cond, num_steps=len(schedule), schedule=schedule)
    steps = len(schedule)
    current = pivots[-1]
    null = null_init
    failed = torch.zeros(latents.shape[0], dtype=torch.bool)
    scaler = torch.amp.GradScaler(components.device.type, enabled=components.autocast_dtype == torch.float16)
    nulls, updates, mses, failures = [], [], [], {}
    for k in range(steps):
        null, current, count, mse, new_failures = _optimise_null_step(
            components, schedule, k, config, current, pivots[steps - 1 - k], cond, null, failed, scaler)
        for support, failure in new_failures.items():
            failures.setdefault(support, failure)
        nulls.append(null.float().cpu())
        updates.append(count)
        mses.append(mse)
        if reporter is not None:
            finite = mse[torch.isfinite(mse)]
            reporter.update(step_offset + k + 1, mse=float(finite.max()) if finite.numel() else float("nan"),
                            inner=int(count.max()))
    return NullTextResult(
        inverted_latents=pivots[-1].float().cpu(),
        null_embeddings=torch.stack(nulls, dim=1),
        inner_steps=torch.stack(updates, dim=1),
        final_mse=torch.stack(mses, dim=1),
        reconstructed_latents=current.float().cpu(),
        timesteps=schedule.timesteps,
    ), failures


def null_text_invert_group(components: SDComponents, images: Sequence[torch.Tensor], prompts: Sequence[str], *,
                           config: NullTextConfig = NullTextConfig(), progress: Progress = None,
                           chunk: int | None = None, support_ids: Sequence[Sequence[str]] | None = None,
                           stage: str = "null-text inversion") -> list[NullTextResult | NonFiniteLossError]:
    """Null-text inversion of the supports of several classes: class ``g``'s ``images[g]``
    (K_g, 3, R, R) in [-1, 1], with its TI prompt ``prompts[g]`` (its token installed).

    All supports go through the UNet together, ``chunk`` (default ``config.batch_size``, else all)
    at a time. Returns, per class, its result, or the :class:`NonFiniteLossError` of its first
    support whose loss turned non-finite (named by ``support_ids[g]`` if given; the other classes
    are unaffected).
    """
    if len(images) != len(prompts) or not prompts:
        raise ValueError(f"need one image batch per prompt, got {len(images)} batches for {len(prompts)} prompts")
    per_class = [encode_images(components, x) for x in images]
    latents = torch.cat(per_class)
    counts = [x.shape[0] for x in per_class]
    embeds = encode_prompts(components, [*prompts, ""])
    owner = torch.arange(len(prompts)).repeat_interleave(torch.tensor(counts)).to(components.device)
    cond, empty = embeds[:-1][owner], embeds[-1:]
    schedule = make_schedule(components, config.num_steps, config.timestep_spacing)
    total = latents.shape[0]
    chunk = max(1, min(chunk or config.batch_size or total, total))
    parts, failures = [], {}
    starts = range(0, total, chunk)
    with Reporter(stage, config.num_steps * len(starts), progress, log_every=5, logger=logger) as reporter:
        for n, start in enumerate(starts):
            part = latents[start:start + chunk]
            size = part.shape[0]
            result, part_failures = _invert_batch(components, part, cond[start:start + chunk],
                                                  empty.expand(size, -1, -1), config, schedule, reporter,
                                                  step_offset=n * config.num_steps)
            parts.append(result)
            failures.update({start + support: failure for support, failure in part_failures.items()})
    joined = {name: torch.cat([getattr(r, name) for r in parts])
              for name in ("inverted_latents", "null_embeddings", "inner_steps", "final_mse", "reconstructed_latents")}
    results: list[NullTextResult | NonFiniteLossError] = []
    for g, first in enumerate(sum(counts[:g]) for g in range(len(counts))):
        supports = range(first, first + counts[g])
        broken = [s for s in supports if s in failures]
        if broken:
            failure = min((failures[s].step, failures[s].inner_step, s) for s in broken)
            f, position = failures[failure[2]], failure[2] - first
            name = support_ids[g][position] if support_ids is not None else position
            results.append(NonFiniteLossError(
                "null_text_inversion", f.step, f.loss, inner_step=f.inner_step,
                detail=f"support {name}, timestep {f.timestep}"))
            continue
        results.append(NullTextResult(**{name: value[first:first + counts[g]] for name, value in joined.items()},
                                      timesteps=schedule.timesteps))
    return results


def _single(result: NullTextResult | NonFiniteLossError) -> NullTextResult:
    if isinstance(result, NonFiniteLossError):
        raise result
    return result


def null_text_invert(components: SDComponents, images: torch.Tensor, prompt: str, *,
                     config: NullTextConfig = NullTextConfig(), progress: Progress = None) -> NullTextResult:
    """Null-text inversion of the K supports ``images`` (K, 3, R, R) in [-1, 1] of one class, batched.

    All supports go through the UNet together (``config.batch_size`` at a time if set, to
    bound memory); each keeps its own null embeddings and early stop.
    """
    return _single(null_text_invert_group(components, [images], [prompt], config=config, progress=progress)[0])


def null_text_invert_sequential(components: SDComponents, images: torch.Tensor, prompt: str, *,
                                config: NullTextConfig = NullTextConfig(),
                                progress: Progress = None) -> NullTextResult:
    """Reference path: the same inversion, one support image at a time."""
    return _single(null_text_invert_group(components, [images], [prompt], config=config, progress=progress,
                                          chunk=1, stage="null-text inversion (sequential)")[0])


def reconstruct_latents(components: SDComponents, inverted_latents: torch.Tensor, null_embeddings: torch.Tensor,
                        prompt: str, *, config: NullTextConfig = NullTextConfig()) -> torch.Tensor:
    """Guided DDIM from each zT with its per-timestep null embeddings; returns the z0 latents."""
    schedule = make_schedule(components, null_embeddings.shape[1], config.timestep_spacing)
    cond = encode_prompts(components, [prompt])
    with torch.inference_mode():
        latents = inverted_latents.to(components.device, components.latent_dtype)
        nulls = null_embeddings.to(components.device)
        return guided_denoise(components, schedule, latents, cond, nulls, config.guidance_scale)


def reconstruct(components: SDComponents, inverted_latents: torch.Tensor, null_embeddings: torch.Tensor,
                prompt: str, *, config: NullTextConfig = NullTextConfig()) -> torch.Tensor:
    """Reconstruct the supports from their inversion: images (K, 3, R, R) in [-1, 1], float32."""
    latents = reconstruct_latents(components, inverted_latents, null_embeddings, prompt, config=config)
    return decode_latents(components, latents).cpu()
