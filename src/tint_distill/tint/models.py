"""Stable Diffusion 1.x components: build a tiny random one, load any local one.

A model is always an ordinary diffusers folder (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``). The same loader reads a tiny test model
and a real SD 1.5 copy; nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelFolderError
from .tokenizer import MODEL_MAX_LENGTH, VOCAB_SIZE, write_clip_tokenizer_files

from tint_distill.params import Settings

logger = logging.getLogger(__name__)

# SD 1.x noise schedule (as in the released scheduler config), with DDIM "trailing" spacing.
SD1_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "prediction_type": "epsilon",
}

# What a ``precision`` setting means. Frozen UNet/VAE weights are stored in that dtype on a GPU
# (float32 on a CPU, where half-precision storage is slow); their calls run under autocast in it.
# The text encoder's weights, learned embedding rows, null embeddings, latents and losses stay
# float32 (the master copies).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}



def weight_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype frozen UNet/VAE weights are stored in for ``precision`` on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision] if device.type == "cuda" else torch.float32


REQUIRED_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
TRAINING_RECORD = "training_record.json"  # how a model trained by this project describes itself
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class TinySDConfig(Settings):
    """Architecture sizes of a small SD-1.x-shaped model.

    The VAE has one level per entry of ``vae_block_out_channels``; its scale factor is
    ``2 ** (levels - 1)`` (SD 1.x: 4 levels, factor 8), so latents are ``resolution / factor``.
    """

    resolution: int = 64
    unet_block_out_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_attention_head_dim: int = 8
    unet_norm_num_groups: int = 32
    cross_attention_dim: int = 32
    vae_block_out_channels: tuple[int, ...] = (16, 32, 32, 32)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    latent_channels: int = 4
    text_hidden_size: int = 32
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 64
    unet_last_level_attention: bool = True  # False: SD 1.x layout (no attention at the deepest level)
    scaling_factor: float | None = None  # None: calibrated so that latents have unit std

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @classmethod
    def sd15(cls) -> "TinySDConfig":
        """The sizes of Stable Diffusion 1.5 (860 M-parameter UNet, 512 px), for timing runs."""
        return cls(resolution=512, unet_block_out_channels=(320, 640, 1280, 1280), unet_layers_per_block=2,
                   unet_attention_head_dim=8, cross_attention_dim=768, vae_block_out_channels=(128, 256, 512, 512),
                   vae_layers_per_block=2, vae_norm_num_groups=32, text_hidden_size=768, text_layers=12,
                   text_heads=12, text_intermediate_size=3072, unet_last_level_attention=False,
                   scaling_factor=0.18215)

    def check(self) -> None:
        for name in ("unet_block_out_channels", "vae_block_out_channels"):  # YAML gives lists
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not 2 <= len(self.vae_block_out_channels) <= 4:
            raise ValueError("the VAE needs 2 to 4 levels (scale factor 2 to 8; SD 1.x has 4, factor 8)")
        if self.resolution % self.vae_scale_factor:
            raise ValueError(f"resolution must be a multiple of the VAE scale factor {self.vae_scale_factor}, "
                             f"got {self.resolution}")
        if self.cross_attention_dim != self.text_hidden_size:
            raise ValueError("cross_attention_dim must equal text_hidden_size")


@dataclass
class SDComponents:
    """The loaded, frozen parts of a Stable Diffusion 1.x model.

    ``unet`` and ``vae`` are stored in ``dtype``; the text encoder is kept in float32 (it is
    small, and textual inversion optimises rows of its embedding matrix). ``autocast_dtype``
    (bf16/fp16, or None for none) is the precision the model calls run in (:meth:`autocast`).
    ``resolution`` is the native image size (UNet sample size x VAE scale factor).
    """

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype
    path: str = ""
    autocast_dtype: torch.dtype | None = None
    resolution: int = field(init=False)
    vae_scale_factor: int = field(init=False)

    def __post_init__(self) -> None:
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape (C, h, w) of one image's latent."""
        size = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), size, size)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_dtype(self) -> torch.dtype:
        """The dtype latents are kept in between model calls: float32 (float64 for a float64 model)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: what the model calls compute in."""
        compute = self.autocast_dtype or self.dtype
        return next((name for name, dtype in PRECISIONS.items() if dtype == compute), str(compute))

    def set_precision(self, precision: str) -> "SDComponents":
        """Compute in ``precision`` (:data:`PRECISIONS`): half-precision UNet/VAE weights on a GPU
        (float32 weights on a CPU, where half-precision storage is slow), autocast on both."""
        self.to(dtype=weight_dtype(precision, self.device))
        self.autocast_dtype = None if precision == "fp32" else PRECISIONS[precision]
        return self

    def autocast(self):
        """The context the UNet/VAE/text-encoder calls run in: autocast to ``autocast_dtype`` if set."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> "SDComponents":
        """Move the UNet/VAE (and the text encoder's device) in place and return ``self``."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        for module in (self.unet, self.vae):
            if module.dtype != dtype:
                module.to(dtype=dtype)
            module.to(device=device)
        self.text_encoder.to(device=device)
        self.device, self.dtype = device, dtype
        return self


def _calibrate_scaling_factor(vae: torch.nn.Module, resolution: int, seed: int) -> float:
    """Return 1 / std of the VAE posterior means of a few smooth synthetic images."""
    rng = torch.Generator().manual_seed(seed)
    coarse = torch.rand(8, 3, 4, 4, generator=rng) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(resolution, resolution), mode="bilinear")
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean
    return float(1.0 / latents.std().clamp_min(1e-6))


def build_sd_modules(config: TinySDConfig, seed: int = 0) -> dict[str, Any]:
    """Seeded random-weight SD-1.x modules (unet, vae, text_encoder, scheduler) for ``config``.

    The tokenizer is not included (see :func:`tint_distill.tint.tokenizer.build_clip_tokenizer`).
    The weights come from the global torch RNG seeded with ``seed`` (module constructors take no
    ``torch.Generator``) inside :func:`torch.random.fork_rng`: the caller's random state is left untouched.
    """
    import diffusers  # noqa: F401  (imported before the seeding, as it always was)
    import transformers  # noqa: F401

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build_sd_modules(config, seed)


def _build_sd_modules(cfg: TinySDConfig, seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    levels = len(cfg.unet_block_out_channels)
    down = ["CrossAttnDownBlock2D"] * levels
    up = ["CrossAttnUpBlock2D"] * levels
    if not cfg.unet_last_level_attention:
        down[-1], up[0] = "DownBlock2D", "UpBlock2D"
    unet = UNet2DConditionModel(
        sample_size=cfg.resolution // cfg.vae_scale_factor,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        block_out_channels=cfg.unet_block_out_channels,
        layers_per_block=cfg.unet_layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.unet_attention_head_dim,
        norm_num_groups=cfg.unet_norm_num_groups,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(cfg.vae_block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(cfg.vae_block_out_channels),
        block_out_channels=cfg.vae_block_out_channels,
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_norm_num_groups,
        sample_size=cfg.resolution,
    )
    scaling = cfg.scaling_factor
    if scaling is None:
        scaling = _calibrate_scaling_factor(vae, cfg.resolution, seed)
    vae.register_to_config(scaling_factor=float(scaling))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.text_hidden_size,
        intermediate_size=cfg.text_intermediate_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=cfg.text_hidden_size,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    ))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder,
            "scheduler": DDIMScheduler(**SD1_SCHEDULER_CONFIG)}


def build_tiny_stable_diffusion(directory: str | Path, *, resolution: int = 64, seed: int = 0,
                                config: TinySDConfig | None = None) -> Path:
    """Build a small random-weight SD-1.x-architecture model and save it as a diffusers folder.

    Uses the real CLIP tokenizer (49408 tokens), a CLIP text encoder, a cross-attention UNet,
    a VAE (scale factor 8 with the default 4 levels) and the SD 1.x DDIM scheduler ("trailing"
    spacing). ``config`` sets the sizes (its ``resolution`` wins over the ``resolution``
    argument). Returns ``directory``.
    """
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    cfg = config or TinySDConfig(resolution=resolution)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modules = build_sd_modules(cfg, seed)
    token_dir = write_clip_tokenizer_files(directory / "_tokenizer_source")
    tokenizer = CLIPTokenizer(vocab=str(token_dir / "vocab.json"), merges=str(token_dir / "merges.txt"),
                              model_max_length=MODEL_MAX_LENGTH)
    pipeline = StableDiffusionPipeline(
        **modules, tokenizer=tokenizer, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        (token_dir / name).unlink()
    token_dir.rmdir()
    logger.info("built a %d px SD-1.x-shaped model (scaling factor %.4f) in %s", cfg.resolution,
                modules["vae"].config.scaling_factor, directory)
    return directory


def components_from_modules(modules: dict[str, Any], tokenizer: Any, *, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32) -> SDComponents:
    """Frozen :class:`SDComponents` from in-memory modules (e.g. :func:`build_sd_modules`), no folder."""
    for name in ("text_encoder", "unet", "vae"):
        modules[name].requires_grad_(False)
        modules[name].eval()
    modules["text_encoder"].to(torch.float32)
    components = SDComponents(tokenizer=tokenizer, text_encoder=modules["text_encoder"], unet=modules["unet"],
                              vae=modules["vae"], scheduler=modules["scheduler"], device=torch.device(device),
                              dtype=dtype)
    return components.to(device=device, dtype=dtype)


def read_training_record(folder: str | Path) -> dict:
    """The folder's ``training_record.json`` (fingerprint, settings, loss curves), or ``{}``
    for a model this project did not train (or an unreadable record)."""
    try:
        record = json.loads((Path(folder) / TRAINING_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _hub_id_in(raw: str) -> str | None:
    """``owner/name`` if ``raw`` looks like a Hub id, also after Kedro made it an absolute path
    below the project folder; else None."""
    candidates = [raw]
    if Path(raw).is_absolute():
        try:
            candidates.append(Path(raw).relative_to(Path.cwd()).as_posix())
        except ValueError:
            pass
    return next((c for c in candidates if _HUB_ID.match(c) and not c.startswith((".", "~"))), None)


def check_model_folder(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is a complete diffusers SD folder, else raise a clear error."""
    raw = str(path)
    folder = Path(path).expanduser()
    if not folder.exists():
        hub_id = _hub_id_in(raw)
        if hub_id:
            raise ModelFolderError(
                f"'{hub_id}' is not a local folder; it looks like a Hugging Face Hub id, but downloads "
                "are impossible here (offline): copy a diffusers Stable Diffusion 1.x folder "
                "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) to this "
                "machine and pass its local path"
            )
        raise ModelFolderError(
            f"Stable Diffusion folder '{folder}' does not exist: put a diffusers SD 1.x folder "
            "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) there or "
            "pass the path of one"
        )
    if not folder.is_dir():
        raise ModelFolderError(f"'{folder}' is a file, not a diffusers Stable Diffusion folder")
    missing = []
    if not (folder / "model_index.json").is_file():
        missing.append("model_index.json")
    checks = {
        "unet": lambda d: (d / "config.json").is_file() and _has_weights(d),
        "vae": lambda d: (d / "config.json").is_file() and _has_weights(d),
        "text_encoder": lambda d: (d / "config.json").is_file() and _has_weights(d),
        "tokenizer": lambda d: (d / "tokenizer.json").is_file()
        or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()),
        "scheduler": lambda d: (d / "scheduler_config.json").is_file(),
    }
    for name, ok in checks.items():
        sub = folder / name
        if not sub.is_dir():
            missing.append(f"{name}/")
        elif not ok(sub):
            missing.append(f"{name}/ (config or weight files)")
    if missing:
        raise ModelFolderError(
            f"Stable Diffusion folder '{folder}' is incomplete: missing {', '.join(missing)}; "
            "it must be a full diffusers folder as written by save_pretrained"
        )
    return folder


def _weight_variant(sub: Path) -> str | None:
    """``"fp16"`` when a component folder only holds fp16-variant weights, else None."""
    plain = [p for p in sub.iterdir() if p.suffix in (".safetensors", ".bin") and p.stem.count(".") == 0]
    if plain:
        return None
    return "fp16" if any(p.name.endswith((".fp16.safetensors", ".fp16.bin")) for p in sub.iterdir()) else None


def load_stable_diffusion(path: str | Path, *, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, precision: str | None = None) -> SDComponents:
    """Load a local diffusers SD 1.x folder (tiny or real) as frozen :class:`SDComponents`.

    Never downloads (``local_files_only=True``). The scheduler is a ``DDIMScheduler`` built
    from the folder's scheduler config; the sampling code chooses the timestep spacing.
    ``precision`` (``fp32`` | ``bf16`` | ``fp16``, see :data:`PRECISIONS`), when given, replaces
    ``dtype``: half-precision weights on a GPU, float32 weights on a CPU, autocast on both.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = check_model_folder(path)
    device = torch.device(device)
    if precision is not None:
        dtype = weight_dtype(precision, device)  # checked before the weights are read
    elif device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        logger.warning("half precision is for GPUs: loading %s in float32 on the CPU", folder)
        dtype = torch.float32
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", local_files_only=True,
            variant=_weight_variant(folder / "text_encoder"), dtype=torch.float32)
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", local_files_only=True, variant=_weight_variant(folder / "unet"),
            torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", local_files_only=True, variant=_weight_variant(folder / "vae"),
            torch_dtype=dtype)
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"could not load the Stable Diffusion folder '{folder}': {error}") from error
    if len(tokenizer) <= 1000:
        raise ModelFolderError(
            f"the tokenizer in '{folder / 'tokenizer'}' has only {len(tokenizer)} tokens: its "
            "vocab.json/merges.txt (or tokenizer.json) are missing or wrong; "
            "tint_distill.tint.tokenizer.write_clip_tokenizer_files writes CLIP's"
        )
    if tokenizer.model_max_length > text_encoder.config.max_position_embeddings:
        tokenizer.model_max_length = int(text_encoder.config.max_position_embeddings)
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False)
        module.eval()
    components = SDComponents(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, vae=vae,
                              scheduler=scheduler, device=device, dtype=dtype, path=str(folder))
    components.to(device=device, dtype=dtype)
    if precision is not None:
        components.set_precision(precision)
    logger.info("loaded SD model %s (%d px, %s, weights %s, computing in %s)", folder, components.resolution,
                device, dtype, components.precision)
    return components


def config_as_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-able dict (tuples become lists)."""
    return json_safe(dataclasses.asdict(config))


def json_safe(value: Any) -> Any:
    """Convert tuples/paths/dtypes/devices inside ``value`` to JSON-able values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_as_dict(value)
    return str(value)
