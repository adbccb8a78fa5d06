"""The synthesis stage: M images per specialised class and sampler (TINT, or the TI-only baseline)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from tint_distill.data.collection import ImageCollection
from tint_distill.data.episodes import episode_images
from tint_distill.data.image_batch import ImageBatch
from tint_distill.data.grids import image_grid
from tint_distill.distill.synthetic_filter import SyntheticFilterSettings

from tint_distill.fingerprints import fingerprint, folder_fingerprint
from tint_distill.keys import PartitionKey, episode_key, partition_key
from tint_distill.methods import SAMPLERS
from tint_distill.model_runtime import DiffusionModel
from tint_distill.params import SettingError, Settings
from tint_distill.tint import apply_specialisation, sample_class, textual_inversion_sample
from tint_distill.tint.diffusion import decode_latents
from tint_distill.tint.imaging import to_pil
from tint_distill.tint.models import PRECISIONS
from tint_distill.tint.sampling import SAMPLING_VERSION
from tint_distill.work import Call, Engine, Stored, Unit, Work, Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisSettings(Settings):
    """The ``synthesis`` parameter block."""

    samplers: tuple[str, ...] = SAMPLERS  # tint; textual_inversion = the TI-only baseline
    images_per_class: int = 20
    alpha: float = 0.5              # 1: pure noise (diversity); 0: reproduce the support
    alpha_mode: str = "fixed"       # fixed | random (alpha ~ U[0, 1] per image)
    batch_size: int = 16
    seed: int = 0
    output_size: int | None = None  # side of the saved images; null: the model's resolution
    device: str = "auto"
    precision: str = "fp32"         # fp32 | bf16 | fp16: what the model calls compute in
    filter: SyntheticFilterSettings = field(default_factory=SyntheticFilterSettings)  # generate more, keep some

    @property
    def generated_per_class(self) -> int:
        """How many images are generated per class: ``images_per_class``, times ``filter.oversample``."""
        return self.filter.generated(self.images_per_class)

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
    """The ``synthesis_preview`` parameter block."""

    n_episodes: int = 3
    n_images: int = 8
    cell_size: int = 64


@dataclass(frozen=True)
class ClassSamples:
    """One class's images to generate with one sampler."""

    key: str  # its specialisation's partition key
    sampler: str


def plan_generation(generator: Path, class_specialisations: Mapping[str, Stored], settings: SynthesisSettings,
                    engine: Engine) -> Work:
    """A unit per (sampler, specialised class): keys ``<sampler>/episode_XXXX/<class>``, each keyed on
    its specialisation's fingerprint, the model and the sampler's settings. Images are drawn one seeded
    generator each, so what counts is how many are generated (``generated_per_class``), not why: the
    filter's thresholds act later, on the teacher's labels, and are not part of these keys."""
    model = DiffusionModel.checked(generator, settings.device, settings.precision)
    model_key = folder_fingerprint(generator)
    sampler_settings = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("samplers", "filter")}
    sampler_settings["images_per_class"] = settings.generated_per_class
    units = []
    for sampler in settings.samplers:
        for key, specialisation in sorted(class_specialisations.items()):
            where = PartitionKey.parse(key)
            units.append(Unit(dataclasses.replace(where, method=sampler).format(),
                              fingerprint(SAMPLING_VERSION, model_key, specialisation.fingerprint, sampler,
                                          sampler_settings),
                              ClassSamples(key, sampler)))
    return Work.of(units, GenerationCall(model, class_specialisations, settings), engine)


@dataclass(frozen=True)
class GenerationCall:
    """Builds one class's :class:`Call` with its specialisation, read here on the driver."""

    model: DiffusionModel
    class_specialisations: Mapping[str, Stored]
    settings: SynthesisSettings

    def __call__(self, tasks: list[ClassSamples]) -> Call:
        (task,) = tasks
        return Call(generate, (self.model, self.class_specialisations[task.key](), self.settings, task), single=True)


def generate(worker: Worker, model: DiffusionModel, spec, settings: SynthesisSettings,
             task: ClassSamples) -> ImageBatch:
    """``settings.generated_per_class`` images of one specialised class with ``task.sampler``, as one
    uint8 batch (what the partition's shard holds; compact for a Ray worker to send back)."""
    components = model.on(worker)
    apply_specialisation(components, spec)
    logger.info("Generating %d %s images for %s", settings.generated_per_class, task.sampler, task.key)
    common = dict(n_images=settings.generated_per_class, seed=settings.seed, batch_size=settings.batch_size,
                  output_size=settings.output_size, output_type="uint8", progress=True)
    if task.sampler == "tint":
        return ImageBatch(sample_class(components, spec, alpha=settings.alpha, alpha_mode=settings.alpha_mode, **common))
    return ImageBatch(textual_inversion_sample(  # the baseline: pure noise, TI prompt, plain "" null embedding
        components, spec.prompt, guidance_scale=spec.null_text.guidance_scale, num_steps=spec.num_steps,
        timestep_spacing=spec.null_text.timestep_spacing, **common))


def preview_grids(model: DiffusionModel, images: ImageCollection, episodes: pd.DataFrame,
                  class_specialisations: Mapping[str, Stored], synthetic_images: Mapping[str, Stored],
                  settings: PreviewSettings) -> dict[str, Image.Image]:
    """Per episode and class: its supports, then images of each sampler (a row per sampler), and
    under the supports their reconstruction from the null-text inversion with its error against
    the VAE round trip (a weak inversion shows at once)."""
    n_episodes, n_images, cell_size = settings.n_episodes, settings.n_images, settings.cell_size
    samplers = [s for s in SAMPLERS if any(k.startswith(f"{s}/") for k in synthetic_images)]
    components = None  # loaded for the first reconstruction to decode
    grids = {}
    for episode in sorted(episodes["episode"].unique())[:n_episodes]:
        rows, n_supports = [], 0
        for (label, name), support_ids in episode_images(episodes, episode, "support").items():
            n_supports = len(support_ids)
            supports = [images.load(i) for i in support_ids]
            for sampler in samplers:
                key = partition_key(episode, name, sampler)
                if key in synthetic_images:
                    label_text = f"{label}: {name} ({sampler.replace('textual_inversion', 'TI')})"
                    rows.append((label_text, [*supports, *synthetic_images[key]()[:n_images]]))
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
    return grids
