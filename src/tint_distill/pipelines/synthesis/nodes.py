"""Nodes of the ``synthesis`` pipeline: TINT images per (episode, class) and preview grids."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import episode_images
from tint_distill.data.grids import image_grid
from tint_distill.execution import execution_engine
from tint_distill.model_runtime import DiffusionModel
from tint_distill.params import SettingError, Settings, settings_from_params
from tint_distill.tint import apply_specialisation, sample_class, textual_inversion_sample
from tint_distill.tint.diffusion import decode_latents
from tint_distill.tint.imaging import to_pil
from tint_distill.tint.models import PRECISIONS
from tint_distill.tint.sampling import SAMPLING_VERSION
from tint_distill.work import Call, Deferred, Worker, episode_key, fingerprint, folder_fingerprint, partition_key

logger = logging.getLogger(__name__)


SAMPLERS = ("tint", "textual_inversion")


@dataclass(frozen=True)
class SynthesisSettings(Settings):
    samplers: tuple[str, ...] = SAMPLERS  # tint; textual_inversion = the TI-only baseline
    images_per_class: int = 20
    alpha: float = 0.5              # 1: pure noise (diversity); 0: reproduce the support
    alpha_mode: str = "fixed"       # fixed | random (alpha ~ U[0, 1] per image)
    batch_size: int = 16
    seed: int = 0
    output_size: int | None = None  # side of the saved images; null: the model's resolution
    device: str = "auto"
    precision: str = "fp32"         # fp32 | bf16 | fp16: what the model calls compute in

    def check(self) -> None:
        for name in ("images_per_class", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.alpha <= 1:
            raise SettingError("alpha", f"must be in [0, 1] (0: the support, 1: pure noise), got {self.alpha}")
        if self.alpha_mode not in ("fixed", "random"):
            raise SettingError("alpha_mode", f"must be 'fixed' or 'random', got {self.alpha_mode!r}")
        if self.output_size is not None and self.output_size < 1:
            raise SettingError("output_size", f"must be >= 1 or null, got {self.output_size}")
        unknown = sorted(set(self.samplers) - set(SAMPLERS))
        if unknown or not self.samplers:
            raise SettingError("samplers", f"must be a non-empty subset of {list(SAMPLERS)}, got {list(self.samplers)}")
        SettingError.unless_one_of("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class PreviewSettings(Settings):
    n_episodes: int = 3
    n_images: int = 8
    cell_size: int = 64


def parse_settings(synthesis: dict) -> SynthesisSettings:
    """The ``synthesis`` block as settings (errors name the parameter)."""
    return settings_from_params(SynthesisSettings, synthesis, "synthesis")


def _generation_call(model: DiffusionModel, load_specialisation, settings: SynthesisSettings, sampler: str,
                     key: str) -> Call:
    """One class's generation with its specialisation, ready to run in any worker."""
    return Call(_generate, (model, load_specialisation(), settings, sampler, key))


def _generate(
    worker: Worker, model: DiffusionModel, spec, settings: SynthesisSettings, sampler: str, key: str
) -> list[Image.Image]:
    components = model.on(worker)
    apply_specialisation(components, spec)
    logger.info("Generating %d %s images for %s", settings.images_per_class, sampler, key)
    common = dict(
        n_images=settings.images_per_class,
        seed=settings.seed,
        batch_size=settings.batch_size,
        output_size=settings.output_size,
        progress=True,
    )
    if sampler == "tint":
        return sample_class(components, spec, alpha=settings.alpha, alpha_mode=settings.alpha_mode, **common)
    return textual_inversion_sample(  # the baseline: pure noise, TI prompt, plain "" null embedding
        components,
        spec.prompt,
        guidance_scale=float(spec.settings.get("guidance_scale", 7.5)),
        num_steps=spec.num_steps,
        timestep_spacing=str(spec.settings.get("timestep_spacing", "trailing")),
        **common,
    )


def generate_synthetic_images(generator: Path, class_specialisations: dict, synthesis: dict,
                              execution: dict | None = None, methods: list[str] | None = None) -> dict[str, Deferred]:
    """M images per specialised class and sampler (keys ``<sampler>/episode_XXXX/<class>``),
    computed and saved one class at a time (here, or on Ray workers: ``execution``); those whose
    inputs did not change are kept. With ``methods`` (the ``task`` pipeline), only the samplers
    those methods train on."""
    settings = parse_settings(synthesis)
    if methods is not None:
        settings = dataclasses.replace(settings, samplers=tuple(s for s in settings.samplers if s in methods))
    engine = execution_engine(execution, "synthesis")
    model = DiffusionModel.checked(generator, settings.device, settings.precision)
    model_key = folder_fingerprint(generator)
    sampler_settings = {k: v for k, v in dataclasses.asdict(settings).items() if k != "samplers"}
    work = {}
    for sampler in settings.samplers:
        for key, specialisation in sorted(class_specialisations.items()):
            upstream = getattr(specialisation, "fingerprint", None)  # chains on the inversion's fingerprint
            work[f"{sampler}/{key}"] = engine.unit(
                fingerprint(SAMPLING_VERSION, model_key, upstream, sampler, sampler_settings),
                partial(_generation_call, model, specialisation, settings, sampler, key),
            )
    return work


def draw_synthesis_previews(
    generator: Path, images: ImageCollection, episodes: pd.DataFrame, class_specialisations: dict,
    synthetic_images: dict, synthesis: dict, n_episodes: int, n_images: int, cell_size: int
) -> tuple[dict[str, Image.Image], Image.Image]:
    """Per episode and class: its supports, then images of each sampler (a row per sampler), and
    under the supports their reconstruction from the null-text inversion with its error against
    the VAE round trip (a weak inversion shows at once). Also returns the first episode's grid
    alone (previewed in Kedro-Viz)."""
    samplers = [s for s in SAMPLERS if any(k.startswith(f"{s}/") for k in synthetic_images)]
    settings = parse_settings(synthesis)
    model = DiffusionModel.checked(generator, settings.device, settings.precision)
    components = None  # loaded for the first reconstruction to decode
    grids = {}
    for episode in sorted(episodes["episode"].unique())[:n_episodes]:
        rows, n_supports = [], 0
        for (label, name), support_ids in episode_images(episodes, episode, "support").items():
            n_supports = len(support_ids)
            supports = [images.load(i) for i in support_ids]
            for sampler in samplers:
                key = f"{sampler}/{partition_key(episode, name)}"
                if key in synthetic_images:
                    rows.append((f"{label}: {name} ({sampler.replace('textual_inversion', 'TI')})", supports + synthetic_images[key]()[:n_images]))
            load = class_specialisations.get(partition_key(episode, name))
            spec = load() if load is not None else None
            if spec is not None and spec.reconstructed_latents is not None:
                components = components or model.load()
                measured = spec.reconstruction
                error = f", {measured['ratio']:.2f}x VAE" if measured else ""
                rebuilt = to_pil(decode_latents(components, spec.reconstructed_latents.to(components.device)))
                rows.append((f"   rebuilt by NTI{error}", rebuilt))
        if rows:
            title = (f"episode {episode}: supports | synthetic samples ({', '.join(samplers)}); "
                     "under them, the supports rebuilt from their null-text inversion")
            grids[episode_key(episode)] = image_grid(rows, cell_size=cell_size, title=title, gap_after=n_supports)
    if not grids:
        raise ValueError("no synthetic images match the episodes: run the synthesis pipeline for these episodes.")
    return grids, grids[min(grids)]
