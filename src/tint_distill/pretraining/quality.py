"""Quality checks of a pre-trained generator: VAE reconstruction, class fidelity, sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from PIL import Image

from tint_distill.params import Settings
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
    from tint_distill.tint.imaging import to_model_tensor

    vae = _vae_of(vae_or_components)
    resolution = int(resolution or vae.config.sample_size)
    x = to_model_tensor(images, resolution)
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


@dataclass(frozen=True)
class QualitySettings(Settings):
    """How a pre-trained generator is judged (see :func:`assess_generator`)."""

    samples_per_class: int = 8      # generated images per class prompt
    prototypes_per_class: int = 10  # real training images per class for the prototype classifier
    sampling_steps: int = 25        # DDIM steps
    guidance_scale: float = 3.0     # classifier-free guidance with the empty prompt
    seed: int = 0

    def check(self) -> None:
        if self.samples_per_class < 1 or self.prototypes_per_class < 1 or self.sampling_steps < 1:
            raise ValueError("samples_per_class, prototypes_per_class and sampling_steps must be >= 1")


@torch.no_grad()
def assess_generator(components: SDComponents, prompt_template: str,
                     train_by_class: Mapping[str, Sequence[Image.Image]],
                     heldout_by_class: Mapping[str, Sequence[Image.Image]], backbone: Any, temperature: float,
                     settings: QualitySettings = QualitySettings()) -> tuple[dict[str, Any], dict[str, list], list]:
    """Judge a generator pre-trained on the classes of ``train_by_class``.

    - **class fidelity**: ``samples_per_class`` images are generated from each class prompt
      (``prompt_template.format(name=class)``) and classified by a nearest-prototype classifier
      on ``backbone`` features (cosine / ``temperature``; prototypes: the first
      ``prototypes_per_class`` training images of each class, at full size). The share
      assigned to the prompt's class is compared with chance (1 / number of classes).
    - **references** for that score: the same classifier on the held-out real images at full
      size, at the generator's resolution, and after a VAE round trip.
    - **VAE reconstruction**: mean squared error (pixels in [-1, 1]) on the held-out images.

    Returns ``(report, samples_by_class, reconstruction_rows)``; the last are (label, images)
    rows for :func:`tint_distill.data.grids.image_grid`.
    """
    from tint_distill.distill.teacher import PrototypeClassifier, extract_features
    from tint_distill.tint.imaging import to_pil

    from tint_distill.tint.imaging import to_model_tensor

    classes = sorted(train_by_class)
    missing = [name for name in classes if not heldout_by_class.get(name)]
    if missing:
        raise ValueError(f"no held-out images for classes {missing}: set heldout_per_class >= 1")
    prototypes, labels = [], []
    for label, name in enumerate(classes):
        chosen = list(train_by_class[name])[:settings.prototypes_per_class]
        prototypes += chosen
        labels += [label] * len(chosen)
    classifier = PrototypeClassifier(temperature=temperature).fit(extract_features(backbone, prototypes), labels)

    def classify(images: list) -> list[str]:
        return [classes[i] for i in classifier.logits(extract_features(backbone, list(images))).argmax(1).tolist()]

    prompts = {name: prompt_template.format(name=name) for name in classes}
    generated = sample_prompts(components, list(prompts.values()), settings.samples_per_class, seed=settings.seed,
                               steps=settings.sampling_steps, guidance_scale=settings.guidance_scale)
    samples = {name: generated[prompts[name]] for name in classes}

    vae = components.vae
    resolution = components.resolution
    heldout = {name: list(heldout_by_class[name]) for name in classes}
    low_res, reconstructed = {}, {}
    for name in classes:
        x = to_model_tensor(heldout[name], resolution).to(components.device, components.dtype)
        low_res[name] = to_pil(x.float())
        reconstructed[name] = to_pil(vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1))
    all_heldout = [image for name in classes for image in heldout[name]]
    report = {
        "classes": classes,
        "resolution": resolution,
        "chance": 1.0 / len(classes),
        "class_fidelity": class_fidelity(samples, classify),
        "real_heldout_accuracy": {
            "full_size": class_fidelity(heldout, classify)["overall"],
            "generator_resolution": class_fidelity(low_res, classify)["overall"],
            "vae_reconstruction": class_fidelity(reconstructed, classify)["overall"],
        },
        "vae_mse_heldout": vae_reconstruction_error(components, all_heldout, resolution),
        "settings": {"prompt_template": prompt_template, "temperature": temperature, **vars(settings)},
        "n_heldout": len(all_heldout),
    }
    first = classes[:8]
    rows = [row for name in first for row in ((f"{name}: held out", low_res[name][:4]),
                                               (f"{name}: VAE", reconstructed[name][:4]))]
    return report, samples, rows
