"""Generating synthetic images: TINT (noise blended with an inverted support) and the TI baseline.

Every image ``i`` draws its randomness (support index, alpha, noise) from its own
``torch.Generator`` (:func:`image_rng`) seeded by ``(seed, i)``, on the CPU, so a seed gives the
same images whatever the batch size or device. A batch of B images costs one UNet call per step
(cond + uncond concatenated).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from .diffusion import decode_latents, encode_prompts, guided_denoise, make_schedule
from .imaging import resize, to_pil, to_uint8
from .models import SDComponents
from .progress import Progress, Reporter

logger = logging.getLogger(__name__)

OutputType = Literal["pil", "uint8", "float"]

# Bumped whenever a change alters the images a seed gives: cached synthetic images carry it in
# their fingerprints, so such a change regenerates them instead of reusing stale ones.
SAMPLING_VERSION = 1


def image_rng(seed: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for image ``index`` of a run with ``seed`` (well-mixed, independent streams)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over all elements of each item: (N, ...) -> (N, 1, 1, 1)."""
    return x.float().pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (x.dim() - 1)))


def blend_with_noise(z_t: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """TINT's start latents: ``(1 - a) zT + a e`` rescaled to RMS ``(1 - a) RMS(zT) + a RMS(e)``.

    ``alpha`` is (N,) with one blend weight per image.
    """
    a = alpha.float().view(-1, 1, 1, 1)
    mixed = (1 - a) * z_t.float() + a * noise.float()
    target = (1 - a) * rms(z_t) + a * rms(noise)
    return mixed * (target / rms(mixed).clamp_min(1e-12))


def _finish(images: torch.Tensor, output_size: int | Sequence[int] | None,
            output_type: OutputType) -> list[Image.Image] | torch.Tensor:
    if output_size is not None:
        images = resize(images, output_size).clamp(-1, 1)
    if output_type == "float":
        return images
    if output_type == "uint8":
        return to_uint8(images)
    if output_type == "pil":
        return to_pil(images)
    raise ValueError(f"output_type must be 'pil', 'uint8' or 'float', got {output_type!r}")


def _generate(components: SDComponents, n_images: int, batch_size: int, draw, denoise_batch,
              progress: Progress, stage: str) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Shared batching loop: ``draw(i)`` gives an image's start latent + info, ``denoise_batch``
    turns a batch of start latents (+ infos) into z0 latents."""
    if n_images < 1 or batch_size < 1:
        raise ValueError("n_images and batch_size must be >= 1")
    images, infos = [], []
    with Reporter(stage, n_images, progress, log_every=max(batch_size, 100), logger=logger) as reporter, \
            torch.inference_mode():
        for start in range(0, n_images, batch_size):
            drawn = [draw(i) for i in range(start, min(start + batch_size, n_images))]
            latents = torch.stack([d[0] for d in drawn]).to(components.device, components.latent_dtype)
            batch_infos = [d[1] for d in drawn]
            z0 = denoise_batch(latents, batch_infos)
            images.append(decode_latents(components, z0).cpu())
            infos.extend(batch_infos)
            for i in range(len(drawn)):
                reporter.update(start + i + 1)
    return torch.cat(images), infos


def tint_sample(components: SDComponents, inverted_latents: torch.Tensor, null_embeddings: torch.Tensor,
                prompt: str, *, n_images: int, alpha: float = 1.0,
                alpha_mode: Literal["fixed", "random"] = "fixed", seed: int = 0, batch_size: int = 16,
                guidance_scale: float = 7.5, timestep_spacing: str = "trailing",
                output_size: int | Sequence[int] | None = None, output_type: OutputType = "pil",
                return_info: bool = False, progress: Progress = None):
    """Generate ``n_images`` TINT images of one class.

    ``inverted_latents`` (K, C, h, w) and ``null_embeddings`` (K, S, L, D) come from null-text
    inversion with ``prompt`` (whose token must be installed, see ``apply_specialisation``);
    the number of DDIM steps S is fixed by ``null_embeddings``. Image ``i`` picks support
    ``s_i`` at random, blends its zT with fresh noise (weight ``alpha``, or ``alpha ~ U[0, 1]``
    per image in "random" mode) and denoises with ``s_i``'s null embeddings. Returns PIL
    images, a uint8 (N, 3, H, W) tensor or float images in [-1, 1]; with ``return_info`` also
    a list of ``{"support": s_i, "alpha": a_i}``.
    """
    if alpha_mode not in ("fixed", "random"):
        raise ValueError(f"alpha_mode must be 'fixed' or 'random', got {alpha_mode!r}")
    if alpha_mode == "fixed" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    supports, steps = null_embeddings.shape[:2]
    if inverted_latents.shape[0] != supports:
        raise ValueError(f"{inverted_latents.shape[0]} inverted latents but {supports} sets of null embeddings")
    if tuple(inverted_latents.shape[1:]) != components.latent_shape:
        raise ValueError(f"latents {tuple(inverted_latents.shape[1:])} do not fit the model "
                         f"{components.latent_shape}")
    schedule = make_schedule(components, steps, timestep_spacing)
    cond = encode_prompts(components, [prompt]).to(components.device)  # once per call
    z_t_all = inverted_latents.float().cpu()
    nulls_all = null_embeddings.to(components.device, torch.float32)

    def draw(i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        rng = image_rng(seed, i)
        support = int(torch.randint(supports, (1,), generator=rng))
        a = float(torch.rand((), generator=rng)) if alpha_mode == "random" else float(alpha)
        noise = torch.randn(z_t_all.shape[1:], generator=rng)
        start = blend_with_noise(z_t_all[support:support + 1], noise.unsqueeze(0), torch.tensor([a]))[0]
        return start, {"support": support, "alpha": a}

    def denoise(latents: torch.Tensor, infos: list[dict[str, Any]]) -> torch.Tensor:
        index = torch.tensor([info["support"] for info in infos], device=components.device)
        return guided_denoise(components, schedule, latents, cond, nulls_all[index], guidance_scale)

    images, infos = _generate(components, n_images, batch_size, draw, denoise, progress, "TINT sampling")
    result = _finish(images, output_size, output_type)
    return (result, infos) if return_info else result


def textual_inversion_sample(components: SDComponents, prompt: str, *, n_images: int, seed: int = 0,
                             batch_size: int = 16, guidance_scale: float = 7.5, num_steps: int = 25,
                             timestep_spacing: str = "trailing", negative_prompt: str = "",
                             output_size: int | Sequence[int] | None = None, output_type: OutputType = "pil",
                             progress: Progress = None):
    """Baseline: sample from pure noise with the TI prompt and the plain "" null embedding."""
    schedule = make_schedule(components, num_steps, timestep_spacing)
    embeds = encode_prompts(components, [prompt, negative_prompt]).to(components.device)
    cond, uncond = embeds[:1], embeds[1:]
    shape = components.latent_shape

    def draw(i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.randn(shape, generator=image_rng(seed, i)), {}

    def denoise(latents: torch.Tensor, infos: list[dict[str, Any]]) -> torch.Tensor:
        return guided_denoise(components, schedule, latents, cond, uncond, guidance_scale)

    images, _ = _generate(components, n_images, batch_size, draw, denoise, progress, "TI sampling")
    return _finish(images, output_size, output_type)
