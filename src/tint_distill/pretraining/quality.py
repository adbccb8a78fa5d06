"""Quality checks of a pre-trained generator: VAE reconstruction, class fidelity, sampling."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from PIL import Image

from tint_distill.tint.models import SDComponents


def _vae_of(vae_or_components: Any) -> torch.nn.Module:
    """The ``AutoencoderKL`` itself, or the ``.vae`` of an SDComponents / pipeline."""
    if hasattr(vae_or_components, "encode"):
        return vae_or_components
    return vae_or_components.vae


@torch.no_grad()
def vae_reconstruction_error(vae_or_components: Any, images: Sequence[Image.Image], resolution: int | None = None,
                             batch_size: int = 32) -> float:
    """Mean squared error in [-1, 1] pixel space of the VAE's reconstructions (posterior mean).

    ``vae_or_components``: an ``AutoencoderKL``, an :class:`SDComponents` or a pipeline. Images
    are padded to a square on white and resized to ``resolution`` (default: the VAE's
    ``sample_size``).
    """
    from .trainer import square_tensors

    vae = _vae_of(vae_or_components)
    resolution = int(resolution or vae.config.sample_size)
    x = square_tensors(images, resolution)
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    total, count = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start:start + batch_size].to(device, dtype)
        recon = vae.decode(vae.encode(chunk).latent_dist.mean).sample.float().clamp(-1, 1)
        total += float((recon - chunk.float()).pow(2).sum())
        count += chunk.numel()
    return total / count


def class_fidelity(generated_by_class: Mapping[str, Sequence[Any]],
                   classify: Callable[[list[Any]], Sequence[str]]) -> dict[str, Any]:
    """Share of the images generated for each class prompt that ``classify`` assigns to that class.

    ``classify(images)`` returns one class name per image. Returns ``{"per_class": {name:
    share}, "overall": share over all images, "chance": 1 / n_classes, "n_images": N}``.
    """
    if not generated_by_class:
        raise ValueError("no classes given")
    per_class, hits, total = {}, 0, 0
    for name, images in generated_by_class.items():
        images = list(images)
        if not images:
            per_class[name] = float("nan")
            continue
        predicted = list(classify(images))
        if len(predicted) != len(images):
            raise ValueError(f"classify returned {len(predicted)} labels for {len(images)} images")
        correct = sum(str(p) == str(name) for p in predicted)
        per_class[name] = correct / len(images)
        hits += correct
        total += len(images)
    return {"per_class": per_class, "overall": hits / total if total else float("nan"),
            "chance": 1.0 / len(generated_by_class), "n_images": total}


def sample_prompts(components: SDComponents, prompts: Sequence[str], n_per_prompt: int, seed: int = 0,
                   steps: int = 25, guidance_scale: float = 7.5, batch_size: int = 16) -> dict[str, list[Image.Image]]:
    """``n_per_prompt`` PIL images per prompt, sampled from pure noise (DDIM, CFG with "")."""
    from tint_distill.tint.sampling import textual_inversion_sample

    return {prompt: textual_inversion_sample(components, prompt, n_images=n_per_prompt, seed=seed + i * 100003,
                                             batch_size=batch_size, guidance_scale=guidance_scale, num_steps=steps)
            for i, prompt in enumerate(prompts)}
