"""Pre-train a small Stable-Diffusion-1.x-shaped generator from scratch on CPU.

Offline there are no SD weights, and a random-weight model only produces noise. This module
trains the tiny model of :func:`tint_distill.tint.build_sd_modules` on a set of (base-class)
drawings so that it produces class-like images, in two stages:

1. the ``AutoencoderKL`` (pixel MSE + L1 + a small KL term), after which the VAE scaling
   factor is set so that the training latents have unit standard deviation;
2. the conditional UNet (epsilon-prediction DDPM loss on scaled VAE latents), conditioned on
   the CLIP text encoder's hidden states of ``"a drawing of a {name}"`` and trained jointly
   with the text encoder; the prompt is replaced by ``""`` with probability
   ``cfg_dropout`` so that classifier-free guidance works at sampling time.

The result is a ``StableDiffusionPipeline`` (real CLIP tokenizer, SD 1.x DDIM scheduler) that
``save_pretrained(folder)`` writes as a diffusers folder readable by
:func:`tint_distill.tint.load_stable_diffusion`. A NaN/inf loss in either stage raises
:class:`~tint_distill.errors.NonFiniteLossError` (stage ``generator_pretraining``).
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from tint_distill.errors import NonFiniteLossError
from tint_distill.params import Settings
from tint_distill.tint.diffusion import add_noise, noise_level
from tint_distill.tint.imaging import to_model_tensor
from tint_distill.tint.models import TinySDConfig, build_sd_modules
from tint_distill.tint.progress import Progress, Reporter
from tint_distill.tint.tokenizer import build_clip_tokenizer, prompt_token_ids

logger = logging.getLogger(__name__)


# The offline default generator's architecture (conf/base's generator_pretraining.architecture).
OFFLINE_GENERATOR = TinySDConfig(resolution=32, vae_block_out_channels=(32, 64, 64), unet_block_out_channels=(64, 128),
                                 cross_attention_dim=64, text_hidden_size=64, text_intermediate_size=128)


@dataclass(frozen=True)
class PretrainingConfig(Settings):
    """Settings of :func:`pretrain_generator`.

    ``model`` gives the architecture (its ``resolution`` is overridden by ``resolution``).
    Each stage stops at its step count or its time budget (seconds, ``None``: no limit),
    whichever comes first. The defaults are conf/base's ``generator_pretraining`` (``training``,
    and ``architecture`` for ``model``).
    """

    resolution: int = 32
    model: TinySDConfig = field(default_factory=lambda: OFFLINE_GENERATOR)
    # stage 1: VAE
    vae_steps: int = 800
    vae_batch_size: int = 32
    vae_learning_rate: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_l1_weight: float = 0.5
    vae_time_budget: float | None = 600
    # stage 2: UNet (+ text encoder)
    unet_steps: int = 1700
    unet_batch_size: int = 32
    unet_learning_rate: float = 1e-3
    text_encoder_learning_rate: float = 1e-4
    train_text_encoder: bool = True
    unet_time_budget: float | None = 1200
    cfg_dropout: float = 0.1
    snr_gamma: float | None = 5.0  # min-SNR loss weighting (None: plain epsilon MSE)
    ema_decay: float | None = 0.998  # EMA of the UNet weights (None: no EMA)
    latent_augmentations: int = 8  # augmented copies of each image encoded once for stage 2
    sample_posterior: bool = True  # latents = posterior sample (else posterior mean) x scaling
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    # data
    prompt_template: str = "a drawing of a {name}"
    crop_scale: tuple[float, float] = (0.7, 1.0)  # random resized crop: share of the area kept
    hflip: bool = True
    seed: int = 0
    log_every: int = 100

    def check(self) -> None:
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        if self.model.resolution != self.resolution:
            object.__setattr__(self, "model", replace(self.model, resolution=self.resolution))
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.vae_steps < 0 or self.unet_steps < 0 or self.latent_augmentations < 1:
            raise ValueError("vae_steps and unet_steps must be >= 0, latent_augmentations >= 1")


# ----------------------------------------------------------------------------------------------
# data


def augment(images: torch.Tensor, resolution: int, crop_scale: tuple[float, float], hflip: bool,
            rng: torch.Generator) -> torch.Tensor:
    """Random resized square crop (area share in ``crop_scale``) + horizontal flip, batched.

    ``images`` (N, 3, S, S) in [-1, 1] with S >= resolution; out: (N, 3, R, R). Regions outside
    the image read as white (the drawings' background).

    Not the students' crop (:mod:`tint_distill.distill.distillation`: uint8 images, aspect
    ratio in [3/4, 4/3], torchvision's resize): the two draw different random numbers and
    resample differently, and each is fixed by the fingerprints of the work it produced.
    """
    n = images.shape[0]
    area = torch.empty(n).uniform_(crop_scale[0], crop_scale[1], generator=rng)
    scale = area.sqrt()  # side of the crop relative to the image
    max_shift = 1.0 - scale
    tx = (torch.rand(n, generator=rng) * 2 - 1) * max_shift
    ty = (torch.rand(n, generator=rng) * 2 - 1) * max_shift
    flip = torch.where(torch.rand(n, generator=rng) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    # sample at 2x the target size, then downsample with antialiasing (avoids aliasing of thin lines)
    fine = 2 * resolution if images.shape[-1] >= 2 * resolution else resolution
    grid = F.affine_grid(theta, [n, 3, fine, fine], align_corners=False)
    out = F.grid_sample(images - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    if fine != resolution:
        out = F.interpolate(out, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# helpers


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to 10 %
    return factor


class _EMA:
    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}
        self.step = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.step += 1
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        for key, value in module.state_dict().items():
            if key in self.shadow:
                self.shadow[key].lerp_(value, 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        state = module.state_dict()
        for key, value in self.shadow.items():
            state[key].copy_(value)


def _out_of_time(start: float, budget: float | None) -> bool:
    return budget is not None and time.perf_counter() - start >= budget


def train_vae(vae: torch.nn.Module, pool: torch.Tensor, config: PretrainingConfig,
              progress: Progress = None) -> dict[str, Any]:
    """Stage 1: train ``vae`` in place on augmented crops of ``pool`` (N, 3, S, S)."""
    rng = torch.Generator().manual_seed(config.seed)
    device = next(vae.parameters()).device
    vae.train().requires_grad_(True)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _lr_lambda(config.warmup_steps, config.vae_steps))
    losses, mses, kls = [], [], []
    start = time.perf_counter()
    step = 0
    with Reporter("VAE pre-training", config.vae_steps, progress, log_every=config.log_every,
                  logger=logger) as reporter:
        for step in range(1, config.vae_steps + 1):
            index = torch.randint(pool.shape[0], (config.vae_batch_size,), generator=rng)
            x = augment(pool[index], config.resolution, config.crop_scale, config.hflip, rng).to(device)
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=rng).to(device)
            recon = vae.decode(z).sample
            mse = F.mse_loss(recon, x)
            l1 = F.l1_loss(recon, x)
            kl = posterior.kl().mean() / x[0].numel()  # per pixel value, like the reconstruction terms
            loss = mse + config.vae_l1_weight * l1 + config.vae_kl_weight * kl * x[0].numel()
            if not torch.isfinite(loss):
                raise NonFiniteLossError("generator_pretraining", step, loss.item(), part="VAE")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            mses.append(float(mse.detach()))
            kls.append(float(kl.detach()))
            reporter.update(step, loss=losses[-1], mse=mses[-1])
            if _out_of_time(start, config.vae_time_budget):
                logger.info("VAE pre-training: time budget %.0f s reached at step %d", config.vae_time_budget, step)
                break
    vae.eval().requires_grad_(False)
    return {"vae_loss": losses, "vae_mse": mses, "vae_kl": kls, "vae_steps_done": step,
            "vae_seconds": time.perf_counter() - start}


@torch.no_grad()
def encode_latent_bank(vae: torch.nn.Module, pool: torch.Tensor, config: PretrainingConfig,
                       batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior means and stds of ``latent_augmentations`` augmented copies of every pool image.

    Returns ``(means, stds, image_index)``: (N*A, C, h, w) twice and (N*A,). The first copy of
    each image is the un-augmented image.
    """
    rng = torch.Generator().manual_seed(config.seed + 1)
    device = next(vae.parameters()).device
    means, stds, owners = [], [], []
    base = F.interpolate(pool, size=(config.resolution, config.resolution), mode="bilinear",
                         align_corners=False, antialias=True) if pool.shape[-1] != config.resolution else pool
    for copy_index in range(config.latent_augmentations):
        for begin in range(0, pool.shape[0], batch_size):
            chunk = pool[begin:begin + batch_size]
            x = base[begin:begin + batch_size] if copy_index == 0 else augment(
                chunk, config.resolution, config.crop_scale, config.hflip, rng)
            posterior = vae.encode(x.to(device)).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
            owners.append(torch.arange(begin, begin + chunk.shape[0]))
    return torch.cat(means).cpu(), torch.cat(stds).cpu(), torch.cat(owners)


def train_unet(unet: torch.nn.Module, text_encoder: torch.nn.Module, scheduler: Any, latents_mean: torch.Tensor,
               latents_std: torch.Tensor, labels: torch.Tensor, prompt_ids: torch.Tensor, null_ids: torch.Tensor,
               scaling: float, config: PretrainingConfig, progress: Progress = None) -> dict[str, Any]:
    """Stage 2: epsilon-prediction DDPM training of ``unet`` (and ``text_encoder``), in place.

    ``labels[i]`` is the class (row of ``prompt_ids``) of bank latent ``i``.
    """
    rng = torch.Generator().manual_seed(config.seed + 2)
    device = next(unet.parameters()).device
    unet.train().requires_grad_(True)
    groups = [{"params": list(unet.parameters()), "lr": config.unet_learning_rate}]
    if config.train_text_encoder:
        text_encoder.train().requires_grad_(True)
        groups.append({"params": list(text_encoder.parameters()), "lr": config.text_encoder_learning_rate})
    else:
        text_encoder.eval().requires_grad_(False)
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _lr_lambda(config.warmup_steps, config.unet_steps))
    ema = _EMA(unet, config.ema_decay) if config.ema_decay else None
    alphas_cumprod = scheduler.alphas_cumprod.float()
    num_train = int(scheduler.config.num_train_timesteps)
    all_ids = torch.cat([prompt_ids, null_ids])  # row n_classes = ""
    null_row = prompt_ids.shape[0]
    losses = []
    start = time.perf_counter()
    step = 0
    with Reporter("UNet pre-training", config.unet_steps, progress, log_every=config.log_every,
                  logger=logger) as reporter:
        for step in range(1, config.unet_steps + 1):
            batch = config.unet_batch_size
            index = torch.randint(latents_mean.shape[0], (batch,), generator=rng)
            mean, std = latents_mean[index], latents_std[index]
            z0 = mean + std * torch.randn(mean.shape, generator=rng) if config.sample_posterior else mean
            z0 = z0 * scaling
            noise = torch.randn(z0.shape, generator=rng)
            z0, noise = z0.to(device), noise.to(device)
            t = torch.randint(num_train, (batch,), generator=rng)
            a = noise_level(alphas_cumprod, t).to(device)
            noisy = add_noise(z0, noise, a)
            rows = labels[index].clone()
            rows[torch.rand(batch, generator=rng) < config.cfg_dropout] = null_row
            unique_rows, inverse = torch.unique(rows, return_inverse=True)
            with torch.set_grad_enabled(config.train_text_encoder):
                hidden = text_encoder(all_ids[unique_rows].to(device))[0]
            prediction = unet(noisy, t.to(device), encoder_hidden_states=hidden[inverse.to(device)]).sample
            per_item = F.mse_loss(prediction, noise, reduction="none").flatten(1).mean(1)
            if config.snr_gamma is not None:
                snr = a.flatten() / (1 - a.flatten())
                per_item = per_item * torch.clamp(snr, max=config.snr_gamma) / snr.clamp_min(1e-8)
            loss = per_item.mean()
            if not torch.isfinite(loss):
                raise NonFiniteLossError("generator_pretraining", step, loss.item(), part="UNet")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            if ema is not None:
                ema.update(unet)
            losses.append(float(loss.detach()))
            reporter.update(step, loss=losses[-1])
            if _out_of_time(start, config.unet_time_budget):
                logger.info("UNet pre-training: time budget %.0f s reached at step %d", config.unet_time_budget, step)
                break
    if ema is not None:
        ema.copy_to(unet)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return {"unet_loss": losses, "unet_steps_done": step, "unet_seconds": time.perf_counter() - start}


def pretrain_generator(images: Sequence[Image.Image], class_names: Sequence[str],
                       config: PretrainingConfig | None = None, progress: Progress = None,
                       device: str | torch.device = "cpu", start_from: str | Path | None = None):
    """Pre-train a small SD-1.x-shaped model from scratch on ``images`` labelled ``class_names``,
    or fine-tune the diffusers folder ``start_from`` (its VAE, UNet and text encoder; its
    architecture replaces ``config.model``, and its resolution must be ``config.resolution``).

    Returns ``(pipeline, history)``: a diffusers ``StableDiffusionPipeline`` (safety checker
    off, real CLIP tokenizer, SD 1.x DDIM scheduler) whose ``save_pretrained(folder)`` gives a
    folder for :func:`tint_distill.tint.load_stable_diffusion`, and a dict with the loss
    curves (``vae_loss``, ``vae_mse``, ``vae_kl``, ``unet_loss``), steps done, seconds per
    stage, the scaling factor and the class list. Training runs on ``device``; the returned
    pipeline is on the CPU.

    Every random draw of the training comes from its own seeded ``torch.Generator``; anything
    inside the models that would draw from the global torch RNG sees it seeded with
    ``config.seed`` inside :func:`torch.random.fork_rng`, so the caller's random state is left
    untouched.
    """
    config = config or PretrainingConfig()
    if len(images) != len(class_names):
        raise ValueError(f"{len(images)} images but {len(class_names)} class names")
    if not images:
        raise ValueError("no images given")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _pretrain_generator(images, class_names, config, progress, device, start_from)


def _starting_modules(config: PretrainingConfig, start_from: str | Path | None) -> tuple[dict[str, Any], Any]:
    """The modules training starts from (seeded random ones, or a folder's in float32) and the tokenizer."""
    if start_from is None:
        with tempfile.TemporaryDirectory() as folder:
            return build_sd_modules(config.model, seed=config.seed), build_clip_tokenizer(folder)
    from tint_distill.tint.models import load_stable_diffusion

    start = load_stable_diffusion(start_from, dtype=torch.float32)
    if start.resolution != config.resolution:
        raise ValueError(f"{start_from} works at {start.resolution} px, but the training resolution is "
                         f"{config.resolution} px")
    modules = {name: getattr(start, name) for name in ("vae", "unet", "text_encoder", "scheduler")}
    return modules, start.tokenizer


def _pretrain_generator(images: Sequence[Image.Image], class_names: Sequence[str], config: PretrainingConfig,
                        progress: Progress, device: str | torch.device, start_from: str | Path | None = None):
    from diffusers import StableDiffusionPipeline

    classes = sorted(set(class_names))
    labels_per_image = torch.tensor([classes.index(name) for name in class_names])
    total_start = time.perf_counter()

    modules, tokenizer = _starting_modules(config, start_from)
    for name in ("vae", "unet", "text_encoder"):
        modules[name].to(device)
    pool_size = 2 * config.resolution
    pool = to_model_tensor(images, pool_size)

    history: dict[str, Any] = {"classes": classes, "n_images": len(images),
                               "started_from": str(start_from) if start_from is not None else "scratch"}
    history.update(train_vae(modules["vae"], pool, config, progress))

    bank_start = time.perf_counter()
    means, stds, owners = encode_latent_bank(modules["vae"], pool, config)
    scaling = float(1.0 / means.std().clamp_min(1e-6))
    modules["vae"].register_to_config(scaling_factor=scaling)
    history["scaling_factor"] = scaling
    history["latent_bank_seconds"] = time.perf_counter() - bank_start
    logger.info("VAE scaling factor %.4f (latent std %.4f)", scaling, 1 / scaling)

    prompts = [config.prompt_template.format(name=name) for name in classes]
    prompt_ids, null_ids = prompt_token_ids(tokenizer, prompts), prompt_token_ids(tokenizer, [""])
    history.update(train_unet(modules["unet"], modules["text_encoder"], modules["scheduler"], means, stds,
                              labels_per_image[owners], prompt_ids, null_ids, scaling, config, progress))
    history["total_seconds"] = time.perf_counter() - total_start
    for name in ("vae", "unet", "text_encoder"):
        modules[name].to("cpu")

    pipeline = StableDiffusionPipeline(
        vae=modules["vae"], text_encoder=modules["text_encoder"], tokenizer=tokenizer, unet=modules["unet"],
        scheduler=modules["scheduler"], safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return pipeline, history


def pipeline_components(pipeline: Any, device: str = "cpu"):
    """Frozen :class:`~tint_distill.tint.SDComponents` sharing (deep copies of) a pipeline's modules."""
    from tint_distill.tint.models import components_from_modules

    modules = {name: copy.deepcopy(getattr(pipeline, name)) for name in ("unet", "vae", "text_encoder", "scheduler")}
    return components_from_modules(modules, pipeline.tokenizer, device=device)
