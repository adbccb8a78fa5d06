"""The prepared GPU check: what one 5-way 5-shot episode costs at the reference settings on one GPU.

Run on a GPU machine from the repository root (``make bench-gpu``, which first installs from
``requirements.lock`` what the machine's Python lacks: ``benchmarks/bench_gpu.sh``)::

    python benchmarks/bench_gpu.py                  # -> benchmarks/results/<device-slug>.json
    python benchmarks/bench_gpu.py --smoke --output /tmp/smoke.json   # tiny models on the CPU, seconds

Every model is built here with random weights (nothing is downloaded): timings do not depend on
the weights. Sections, each timed through the project's own code, each independent (one that
fails records its error and the others run), the JSON rewritten after each one (a run stopped
by a timeout still leaves what it measured):

- ``environment``: device, memory, library versions.
- ``flop_estimate``: FLOPs of every model call counted on the meta device (no compute) and what
  they imply at an assumed sustained rate: an estimate, never a measurement.
- ``generation``: Stable Diffusion 1.5 (its published architecture: 860 M UNet, CLIP ViT-L/14
  text encoder, VAE) in bf16 at 512 px: ``tint_sample`` images/s at batch 16 and 32, 25 guided
  DDIM steps (CFG 7.5), saved size as ``conf/gpu`` synthesis.
- ``specialisation``: ``specialise_group`` on 5 classes x 5 supports at ``conf/gpu``'s inversion
  settings with few steps: grouped TI steps/s, NTI seconds per support, extrapolated to the
  reference step counts -> seconds of specialisation per class.
- ``teacher``: ViT-B/14 (DINOv2 architecture) at 224 px, bf16 autocast, through
  ``load_timm_backbone`` / ``teacher_logits``: images/s on 84 px synthetic images.
- ``student``: ResNet-12 (``student.name: resnet12``; resnet18 when it is not registered, and
  the JSON says so) at 84 px through ``create_student`` / ``train_student``: training images/s.
- ``episode``: the implied time of one 5-way 5-shot episode at the reference settings and the
  issue's goals, pass or fail each.

``--budget-s`` bounds the measuring: a section that would not fit is skipped or shortened,
with a note. ``--smoke`` runs the same code paths with tiny models on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import yaml  # noqa: E402

from tint_distill.tint import (ClassToSpecialise, NullTextConfig, TextualInversionConfig, TinySDConfig,  # noqa: E402
                               add_class_token, specialise_group, tint_sample)
from tint_distill.tint.diffusion import encode_prompts  # noqa: E402
from tint_distill.tint.models import build_sd_modules, components_from_modules  # noqa: E402
from tint_distill.tint.tokenizer import build_clip_tokenizer  # noqa: E402

# The goals for one H100 (issue 23, item 7).
GOALS = {"generation_images_per_s": 12.0, "specialisation_s_per_class": 60.0, "episode_s": 600.0}
# bf16 dense matrix products measured on this workplace's H100 (8192^3, /work/.library/device/KINDS.md).
H100_BF16_MATMUL_TFLOPS = 798.0
# Assumed sustained fractions of that rate for the FLOP estimate (assumptions, not measurements):
# large convolutions and attention at 512 px / 224 px reach a good share of it; a ResNet-12 at
# 84 px (small feature maps, batch 80) far less.
ASSUMED_UTILISATION = {"diffusion": 0.45, "teacher": 0.45, "student": 0.15}
TEACHER_NAME = "vit_base_patch14_dinov2"
STUDENT_NAME, STUDENT_FALLBACK = "resnet12", "resnet18"
SECTIONS = ("environment", "flop_estimate", "generation", "specialisation", "teacher", "student", "episode")


@dataclass(frozen=True)
class Scale:
    """How big each section's models and workloads are: the real sizes, or tiny ones for ``--smoke``."""

    sd: TinySDConfig
    generation_batches: tuple[int, ...]
    generation_batches_timed: int       # timed batches per batch size (after one warm-up batch)
    ti_steps: int                       # timed grouped TI steps (after a warm-up of 1)
    nti_timesteps: int                  # timed NTI DDIM steps (after a warm-up of 1)
    teacher_kwargs: dict[str, Any]
    teacher_image_size: int
    teacher_images: int
    student_image_size: int
    student_images: int
    synthetic_size: int                 # side of the synthetic images the teacher and students read
    generation_steps: int | None = None  # None: conf/gpu's (25); the smoke run takes fewer
    nti_inner_steps: int | None = None   # None: conf/gpu's (10)
    # seconds each section may take at most (measuring inside them shrinks to fit)
    section_share_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def full(cls) -> "Scale":
        return cls(sd=TinySDConfig.sd15(), generation_batches=(16, 32), generation_batches_timed=2, ti_steps=30,
                   nti_timesteps=2, teacher_kwargs={"img_size": 224}, teacher_image_size=224, teacher_images=2048,
                   student_image_size=84, student_images=2048, synthetic_size=84,
                   section_share_s={"flop_estimate": 30, "generation": 130, "specialisation": 110, "teacher": 40,
                                    "student": 60})

    @classmethod
    def smoke(cls) -> "Scale":
        return cls(sd=TinySDConfig(), generation_batches=(2, 4), generation_batches_timed=1, ti_steps=2,
                   nti_timesteps=1, teacher_kwargs={"img_size": 28, "depth": 1, "embed_dim": 32, "num_heads": 2},
                   teacher_image_size=28, teacher_images=8, student_image_size=32, student_images=12,
                   synthetic_size=32, generation_steps=3, nti_inner_steps=2,
                   section_share_s={"flop_estimate": 10, "generation": 10, "specialisation": 10, "teacher": 10,
                                    "student": 10})


# --- settings -------------------------------------------------------------------------------------

def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def reference_settings(conf: Path = ROOT / "conf") -> dict[str, dict]:
    """The parameter blocks of ``conf/base`` with ``conf/gpu`` over them (as ``kedro run --env gpu``)."""
    merged: dict[str, Any] = {}
    for environment in ("base", "gpu"):
        for file in sorted((conf / environment).glob("parameters*.yml")):
            merged = _merge(merged, yaml.safe_load(file.read_text(encoding="utf-8")) or {})
    return merged


def _config(cls: type, block: dict, **overrides) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in block.items() if k in known}, **overrides})


# --- measuring helpers ----------------------------------------------------------------------------

def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    synchronise(device)
    started = time.perf_counter()
    result = function()
    synchronise(device)
    return result, time.perf_counter() - started


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict, key: str = "peak_memory_gib"):
    """Record ``torch.cuda.max_memory_allocated`` over the block (None on a CPU)."""
    if device.type == "cuda":
        synchronise(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        into[key] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def device_slug(device: torch.device) -> str:
    """``nvidia-h100-80gb-hbm3`` for an "NVIDIA H100 80GB HBM3"; ``cpu-<machine>`` on a CPU."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class Budget:
    """Seconds left of ``--budget-s``; each section gets at most its share of what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def for_section(self, share: float) -> float:
        return max(0.0, min(share, self.left()))


class Report:
    """The JSON report, rewritten after every section."""

    def __init__(self, path: Path | None, data: dict) -> None:
        self.path, self.data = path, data

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=str) + "\n", encoding="utf-8")
        temporary.replace(self.path)

    def run(self, name: str, function: Callable[[], dict]) -> None:
        started = time.perf_counter()
        try:
            section = function()
        except Exception as error:  # noqa: BLE001 - a failing section is recorded; the others still run
            section = {"error": f"{type(error).__name__}: {error}",
                       "traceback": traceback.format_exc().splitlines()[-12:]}
        section["section_seconds"] = round(time.perf_counter() - started, 3)
        self.data["sections"][name] = section
        print(f"[bench_gpu] {name}: {json.dumps(section, default=str)[:400]}", flush=True)
        self.write()


# --- the Stable Diffusion model, built once -------------------------------------------------------

class DiffusionModel:
    """SD-1.x components with random weights at ``config``'s sizes, built on first use."""

    def __init__(self, config: TinySDConfig, device: torch.device, precision: str) -> None:
        self.config, self.device, self.precision = config, device, precision
        self._components = None
        self.build_seconds: float | None = None

    def get(self):
        if self._components is None:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as scratch:
                tokenizer = build_clip_tokenizer(scratch)
            components = components_from_modules(build_sd_modules(self.config, seed=0), tokenizer, device=self.device)
            self._components = components.set_precision(self.precision)
            self.build_seconds = time.perf_counter() - started
        return self._components

    def release(self) -> None:
        self._components = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def random_supports(classes: int, shots: int, resolution: int, seed: int = 0) -> list[torch.Tensor]:
    """Smooth random colour fields in [-1, 1] (random-weight models: timings do not depend on content)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(classes * shots, 3, 6, 6, generator=generator) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(resolution, resolution), mode="bicubic").clamp(-1, 1)
    return list(images.split(shots))


def random_uint8_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)


# --- sections -------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    import importlib.metadata as metadata

    versions = {}
    for package in ("torch", "diffusers", "transformers", "timm", "torchvision", "safetensors", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
           "versions": versions, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), memory_gib=props.total_memory / 2**30,
                   multiprocessors=props.multi_processor_count, bf16_supported=torch.cuda.is_bf16_supported(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
    return out


def student_name() -> str:
    """ResNet-12 when the project registers it (``student.name: resnet12``), else resnet18."""
    import timm

    from tint_distill.distill.student import STUDENT_PRESETS  # importing it registers the project's models

    return STUDENT_NAME if timm.is_model(STUDENT_NAME) or STUDENT_NAME in STUDENT_PRESETS else STUDENT_FALLBACK


def _flops(function: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def flop_estimate(scale: Scale, settings: dict) -> dict:
    """FLOPs per model call counted on the meta device, the reference episode's total, and the
    time it implies at ``ASSUMED_UTILISATION`` x the H100's measured bf16 matmul rate. AN ESTIMATE."""
    import timm

    from tint_distill.distill.student import create_student

    meta = torch.device("meta")
    with meta:
        # a fixed scaling factor: calibrating one would run the VAE, and meta tensors hold no values
        modules = build_sd_modules(dataclasses.replace(scale.sd, scaling_factor=0.18215), seed=0)
    latent = scale.sd.resolution // scale.sd.vae_scale_factor
    z = torch.empty(1, scale.sd.latent_channels, latent, latent, device=meta)
    text = torch.empty(1, 77, scale.sd.cross_attention_dim, device=meta)
    unet = _flops(lambda: modules["unet"](z, torch.tensor([500], device=meta), encoder_hidden_states=text))
    vae_decode = _flops(lambda: modules["vae"].decode(z))
    vae_encode = _flops(lambda: modules["vae"].encode(torch.empty(1, 3, scale.sd.resolution, scale.sd.resolution,
                                                                    device=meta)))
    with meta:
        teacher = timm.create_model(TEACHER_NAME, pretrained=False, num_classes=0, **scale.teacher_kwargs)
    size = scale.teacher_image_size
    teacher_flops = _flops(lambda: teacher(torch.empty(1, 3, size, size, device=meta)))
    name = student_name()
    student = create_student(name, num_classes=5, image_size=scale.student_image_size).to(meta)
    student_flops = _flops(lambda: student(torch.empty(1, 3, scale.student_image_size, scale.student_image_size,
                                                       device=meta)))
    inversion, nti = settings["inversion"], settings["inversion"]["null_text"]
    steps, inner = int(nti["num_steps"]), int(nti["inner_steps"])
    per_call = {"unet_forward": unet, "vae_decode": vae_decode, "vae_encode": vae_encode,
                "teacher_forward": teacher_flops, "student_forward": student_flops}
    # Frozen weights: a backward pass computes input gradients only (about one forward).
    work = {
        "generation_per_image": 2 * steps * unet + vae_decode,  # CFG: cond + uncond per DDIM step
        "textual_inversion_step_per_class": 2 * unet * int(inversion["textual_inversion"]["batch_size"]),
        # DDIM inversion (1) + the cond prediction (1) + inner steps (forward + backward) + the final step (1)
        "null_text_per_support": steps * (3 + 2 * inner) * unet + vae_encode,
        "teacher_per_image": teacher_flops,
        "student_per_image_trained": 3 * student_flops,  # forward, input and weight gradients
    }
    episode = reference_episode(settings)
    episode_flops = {
        "specialisation": episode["classes"] * (int(inversion["textual_inversion"]["num_steps"])
                                                * work["textual_inversion_step_per_class"]
                                                + episode["shots"] * work["null_text_per_support"]),
        "generation": episode["images"] * work["generation_per_image"],
        "teacher": episode["images"] * work["teacher_per_image"],
        "students": episode["student_images_trained"] * work["student_per_image_trained"],
    }
    kind = {"specialisation": "diffusion", "generation": "diffusion", "teacher": "teacher", "students": "student"}
    seconds = {part: flops / (ASSUMED_UTILISATION[kind[part]] * H100_BF16_MATMUL_TFLOPS * 1e12)
               for part, flops in episode_flops.items()}
    generation_rate = ASSUMED_UTILISATION["diffusion"] * H100_BF16_MATMUL_TFLOPS * 1e12 / work["generation_per_image"]
    specialisation_per_class = seconds["specialisation"] / episode["classes"]
    return {
        "what": "ESTIMATE, NOT MEASURED: FLOPs counted on the meta device (torch.utils.flop_counter) at the "
                "models' sizes, times the reference work, at an ASSUMED sustained fraction of the H100's "
                f"measured bf16 matmul rate ({H100_BF16_MATMUL_TFLOPS} TFLOP/s)",
        "models": {"sd": dataclasses.asdict(scale.sd), "teacher": TEACHER_NAME, "teacher_kwargs": scale.teacher_kwargs,
                   "student": name, "student_image_size": scale.student_image_size},
        "tflop_per_call": {k: v / 1e12 for k, v in per_call.items()},
        "tflop_per_unit_of_work": {k: v / 1e12 for k, v in work.items()},
        "episode_pflop": {k: v / 1e15 for k, v in episode_flops.items()},
        "assumed_utilisation": ASSUMED_UTILISATION,
        "generation_images_per_s_at_full_matmul_rate": H100_BF16_MATMUL_TFLOPS * 1e12 / work["generation_per_image"],
        "estimated_h100": {
            "generation_images_per_s": generation_rate,
            "specialisation_s_per_class": specialisation_per_class,
            "episode_seconds": seconds,
            "episode_s": sum(seconds.values()),
            "utilisation_needed_for_generation_goal": GOALS["generation_images_per_s"] * work["generation_per_image"]
            / (H100_BF16_MATMUL_TFLOPS * 1e12),
            "goals": goals(generation_rate, specialisation_per_class, sum(seconds.values())),
        },
    }


def generation(model: DiffusionModel, scale: Scale, settings: dict, budget_s: float) -> dict:
    """``tint_sample`` images/s at each batch size: 25 guided DDIM steps, uint8 at the saved size."""
    synthesis, nti = settings["synthesis"], settings["inversion"]["null_text"]
    components = model.get()
    steps = scale.generation_steps or int(nti["num_steps"])
    token = "<bench-generation>"
    add_class_token(components, token, "object")
    prompt = settings["inversion"]["textual_inversion"]["prompt_template"].format(token=token)
    supports = 5
    latents = torch.randn(supports, *components.latent_shape, generator=torch.Generator().manual_seed(0))
    nulls = encode_prompts(components, [""]).cpu().unsqueeze(0).expand(supports, steps, -1, -1)
    out: dict[str, Any] = {"precision": model.precision, "resolution": components.resolution, "num_steps": steps,
                           "guidance_scale": float(nti["guidance_scale"]), "output_size": synthesis.get("output_size"),
                           "model_build_s": model.build_seconds,
                           "unet_parameters": sum(p.numel() for p in components.unet.parameters())}
    started = time.perf_counter()
    for batch in scale.generation_batches:
        key = f"batch{batch}"

        def run(count: int, batch: int = batch):
            return tint_sample(components, latents, nulls, prompt, n_images=count, alpha=float(synthesis["alpha"]),
                               batch_size=batch, guidance_scale=float(nti["guidance_scale"]),
                               output_size=synthesis.get("output_size"), output_type="uint8")

        left = budget_s - (time.perf_counter() - started)
        if left <= 0:
            out[key] = {"skipped": "the section's budget was spent"}
            continue
        entry: dict[str, Any] = {}
        with peak_memory(model.device, entry):
            _, warm_s = timed(lambda: run(batch), model.device)  # warm-up: kernels chosen, memory taken
            batches = max(1, min(scale.generation_batches_timed,
                                 int((budget_s - (time.perf_counter() - started)) / max(warm_s, 1e-3))))
            images, seconds = timed(lambda: run(batches * batch), model.device)
        entry.update(images=int(images.shape[0]), seconds=seconds, images_per_s=images.shape[0] / seconds,
                     warm_up_s=warm_s)
        if batches < scale.generation_batches_timed:
            entry["note"] = f"shortened to {batches} batch(es) to stay within the budget"
        out[key] = entry
    rates = [v["images_per_s"] for k, v in out.items() if k.startswith("batch") and "images_per_s" in v]
    out["best_images_per_s"] = max(rates) if rates else None
    return out


def specialisation(model: DiffusionModel, scale: Scale, settings: dict, budget_s: float) -> dict:
    """``specialise_group`` at conf/gpu's settings with few steps, extrapolated to the reference steps."""
    inversion = settings["inversion"]
    group = int(inversion["group_size"])
    shots = 5
    components = model.get()
    reference_ti = _config(TextualInversionConfig, inversion["textual_inversion"])
    reference_nti = _config(NullTextConfig, inversion["null_text"])
    timed_nti = dataclasses.replace(reference_nti, inner_steps=scale.nti_inner_steps or reference_nti.inner_steps)
    supports = random_supports(group, shots, components.resolution)

    def run(ti_steps: int, nti_steps: int, tag: str):
        classes = [ClassToSpecialise(images, f"<bench-{tag}-{g}>", "object") for g, images in enumerate(supports)]
        return specialise_group(components, classes,
                                ti_config=dataclasses.replace(reference_ti, num_steps=ti_steps,
                                                              log_every=max(ti_steps, 1)),
                                nti_config=dataclasses.replace(timed_nti, num_steps=nti_steps))

    out: dict[str, Any] = {"classes": group, "shots": shots, "precision": model.precision,
                           "settings": "conf/base + conf/gpu inversion block, step counts reduced",
                           "reference_steps": {"textual_inversion": reference_ti.num_steps,
                                               "null_text": reference_nti.num_steps,
                                               "inner_steps": reference_nti.inner_steps},
                           "null_text_batch_size": reference_nti.batch_size}
    started = time.perf_counter()
    with peak_memory(model.device, out):
        _, warm_s = timed(lambda: run(1, 1, "warm"), model.device)
        ti_steps, nti_steps = scale.ti_steps, scale.nti_timesteps
        if warm_s * max(ti_steps / 2, nti_steps) > budget_s - (time.perf_counter() - started):
            ti_steps, nti_steps = max(2, ti_steps // 4), 1
            out["note"] = "steps reduced to stay within the budget"
        results, total_s = timed(lambda: run(ti_steps, nti_steps, "timed"), model.device)
    diagnostics = results[0].diagnostics
    ti_s, nti_s = diagnostics["seconds"]["textual_inversion"], diagnostics["seconds"]["null_text"]
    inner_mean = diagnostics["losses"]["null_text_inner_steps_mean"]
    if timed_nti.inner_steps != reference_nti.inner_steps:
        out["note_inner_steps"] = f"timed with {timed_nti.inner_steps} inner steps, not {reference_nti.inner_steps}"
    supports_total = group * shots
    ti_step_s = ti_s / ti_steps
    nti_support_step_s = nti_s / (supports_total * nti_steps)
    per_class = {
        "textual_inversion": reference_ti.num_steps * ti_step_s / group,
        "null_text": shots * reference_nti.num_steps * nti_support_step_s,
    }
    per_class["total"] = per_class["textual_inversion"] + per_class["null_text"]
    out.update({
        "warm_up_s": warm_s, "timed_steps": {"textual_inversion": ti_steps, "null_text": nti_steps},
        "seconds": {"textual_inversion": ti_s, "null_text": nti_s, "whole_call": total_s},
        "grouped_textual_inversion_steps_per_s": 1 / ti_step_s,
        "null_text_inner_steps_mean": inner_mean,
        "null_text_s_per_support": reference_nti.num_steps * nti_support_step_s,
        "specialisation_s_per_class": per_class,
        "how": f"{reference_ti.num_steps} grouped TI steps shared by {group} classes, plus {shots} supports x "
               f"{reference_nti.num_steps} NTI timesteps at the measured rates (NTI includes its DDIM inversion "
               f"and the supports' encoding; inner steps as measured, mean {inner_mean:.2f} of "
               f"{reference_nti.inner_steps})",
    })
    return out


def _random_weights_file(directory: str, scale: Scale) -> str:
    """A timm state dict of random weights for the teacher (nothing is downloaded)."""
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(TEACHER_NAME, pretrained=False, num_classes=0, **scale.teacher_kwargs)
    path = str(Path(directory) / "teacher.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def teacher(device: torch.device, scale: Scale, settings: dict, budget_s: float) -> dict:
    """The project's teacher path on 84 px synthetic images: preprocess to the backbone's size,
    features in bf16 autocast, prototype logits."""
    from tint_distill.distill.teacher import PrototypeClassifier, extract_features, load_timm_backbone, teacher_logits

    block = settings["teacher"]
    batch_size = int(block["batch_size"])
    with tempfile.TemporaryDirectory() as scratch:
        backbone = load_timm_backbone(TEACHER_NAME, _random_weights_file(scratch, scale), **scale.teacher_kwargs)
    if backbone.image_size != scale.teacher_image_size:  # the DINOv2 config says 518; the checkpoint was built at 224
        backbone = dataclasses.replace(backbone, image_size=scale.teacher_image_size)
    backbone.model.to(device)
    supports = random_uint8_images(25, scale.synthetic_size, seed=1)
    labels = torch.arange(5).repeat_interleave(5)
    images = random_uint8_images(scale.teacher_images, scale.synthetic_size, seed=2)
    out: dict[str, Any] = {"backbone": TEACHER_NAME, "image_size": backbone.image_size, "precision": "bf16 autocast"
                           if device.type == "cuda" else "fp32", "batch_size": batch_size,
                           "input": f"uint8 tensors of {scale.synthetic_size} px (synthesis.output_size)",
                           "parameters": sum(p.numel() for p in backbone.model.parameters())}
    precision = "bf16" if device.type == "cuda" else "fp32"
    started = time.perf_counter()
    with peak_memory(device, out):
        with autocast(device, precision):
            classifier = PrototypeClassifier(float(block["temperature"])).fit(
                extract_features(backbone, supports, batch_size), labels)
            _, warm_s = timed(lambda: teacher_logits(backbone, classifier, images[:batch_size], batch_size), device)
            left = budget_s - (time.perf_counter() - started)
            count = max(batch_size, min(len(images), int(0.8 * left / max(warm_s, 1e-4) * batch_size)))
            logits, seconds = timed(lambda: teacher_logits(backbone, classifier, images[:count], batch_size), device)
    out.update(images=int(logits.shape[0]), seconds=seconds, images_per_s=logits.shape[0] / seconds, warm_up_s=warm_s)
    if count < len(images):
        out["note"] = f"shortened to {count} images to stay within the budget"
    backbone.model.to("cpu")
    return out


def student(device: torch.device, scale: Scale, settings: dict, budget_s: float) -> dict:
    """``train_student`` on uint8 synthetic images with the teacher's logits and the supports:
    two epochs, the second timed (the first warms up)."""
    from tint_distill.distill.distillation import DistillationConfig, train_student
    from tint_distill.distill.student import create_student

    name = student_name()
    config = _config(DistillationConfig, settings["distillation"], image_size=scale.student_image_size, epochs=2)
    images = random_uint8_images(scale.student_images, scale.synthetic_size, seed=3)
    logits = torch.randn(scale.student_images, 5, generator=torch.Generator().manual_seed(4))
    supports = random_uint8_images(25, scale.synthetic_size, seed=5)
    labels = torch.arange(5).repeat_interleave(5)
    model = create_student(name, num_classes=5, image_size=scale.student_image_size).to(device)
    out: dict[str, Any] = {"student": name, "fallback": name != STUDENT_NAME, "image_size": config.image_size,
                           "batch_size": config.batch_size, "augmentation": config.augmentation,
                           "parameters": sum(p.numel() for p in model.parameters()),
                           "precision": "as the project's training code runs it"}
    # a first short run (one epoch on a slice) tells how many images fit the budget
    started = time.perf_counter()
    with peak_memory(device, out):
        warm_count = min(len(images), 4 * config.batch_size)
        _, warm_s = timed(lambda: train_student(model, images[:warm_count], logits[:warm_count], supports, labels,
                                                dataclasses.replace(config, epochs=1)), device)
        per_image = warm_s / warm_count
        left = budget_s - (time.perf_counter() - started)
        count = max(warm_count, min(len(images), int(0.8 * left / (config.epochs * per_image))))
        history = train_student(model, images[:count], logits[:count], supports, labels, config)
    last = history[-1]
    support_per_batch = min(len(supports), config.support_batch_size or max(1, config.batch_size // 4))
    trained = count + last["steps"] * support_per_batch
    out.update(synthetic_images=count, images_per_epoch=trained, epoch_seconds=last["seconds"],
               images_per_s=trained / last["seconds"], warm_up_s=warm_s)
    if count < len(images):
        out["note"] = f"shortened to {count} synthetic images to stay within the budget"
    return out


def reference_episode(settings: dict) -> dict:
    """What one 5-way 5-shot episode does at the reference settings (conf/base + conf/gpu)."""
    from tint_distill.distill.distillation import DistillationConfig

    classes, shots = 5, 5
    images = classes * int(settings["synthesis"]["images_per_class"])
    config = _config(DistillationConfig, settings["distillation"])
    steps = math.ceil(images / config.batch_size)
    support_per_batch = min(classes * shots, config.support_batch_size or max(1, config.batch_size // 4))
    students = 5
    return {"classes": classes, "shots": shots, "images": images, "students": students, "epochs": config.epochs,
            "student_images_trained": students * config.epochs * (images + steps * support_per_batch),
            "how": "specialisation of the 5 classes + generation of images_per_class x 5 images + the teacher "
                   "labelling them + 5 students of distillation.epochs epochs, each over those images and the "
                   "supports riding along in every batch (the goal's definition; the methods textual_inversion "
                   "and mined_real each add as many images again)"}


def goals(generation_rate: float | None, specialisation_s: float | None, episode_s: float | None) -> dict:
    def check(value, goal, at_least: bool):
        if value is None:
            return {"value": None, "goal": goal, "pass": None}
        return {"value": value, "goal": goal, "pass": bool(value >= goal if at_least else value <= goal)}

    return {"generation_images_per_s": check(generation_rate, GOALS["generation_images_per_s"], True),
            "specialisation_s_per_class": check(specialisation_s, GOALS["specialisation_s_per_class"], False),
            "episode_s": check(episode_s, GOALS["episode_s"], False)}


def episode(sections: dict, settings: dict) -> dict:
    """The implied time of one reference episode from the measured rates, against the goals."""
    work = reference_episode(settings)
    missing = []

    def measured(section: str, *keys: str):
        value = sections.get(section, {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            missing.append(f"{section}.{'.'.join(keys)}")
        return value

    generation_rate = measured("generation", "best_images_per_s")
    per_class = measured("specialisation", "specialisation_s_per_class", "total")
    teacher_rate = measured("teacher", "images_per_s")
    student_rate = measured("student", "images_per_s")
    seconds = {
        "specialisation": None if per_class is None else work["classes"] * per_class,
        "generation": None if generation_rate is None else work["images"] / generation_rate,
        "teacher": None if teacher_rate is None else work["images"] / teacher_rate,
        "students": None if student_rate is None else work["student_images_trained"] / student_rate,
    }
    total = None if missing else sum(seconds.values())
    out = {"reference": work, "seconds": seconds, "episode_s": total,
           "goals": goals(generation_rate, per_class, total)}
    if missing:
        out["note"] = f"incomplete: no measurement of {', '.join(missing)}"
    if sections.get("student", {}).get("fallback"):
        out["student_note"] = f"students timed as {STUDENT_FALLBACK}: ResNet-12 was not registered"
    return out


# --- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None,
                        help="the JSON report (default: benchmarks/results/<device-slug>.json)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write <output-dir>/<device-slug>.json instead (e.g. the device tool's $OUT)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="seconds the measuring may take: sections are shortened or skipped, with a note")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: the same code paths in seconds")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--precision", default=None, choices=["bf16", "fp16", "fp32"],
                        help="of the diffusion sections (default: bf16; fp32 with --smoke, as CPUs run it)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke else args.device)
    scale = Scale.smoke() if args.smoke else Scale.full()
    # No global backend switches (TF32, cuDNN autotuning): the project's code is timed as it runs.
    name = f"{device_slug(device)}{'-smoke' if args.smoke else ''}.json"
    output = args.output or (args.output_dir or ROOT / "benchmarks" / "results") / name
    settings = reference_settings()
    budget = Budget(args.budget_s)
    report = Report(output, {"what": "prepared GPU check (issue 23 item 7): random-weight models, nothing downloaded",
                             "smoke": args.smoke, "device": str(device), "budget_s": args.budget_s,
                             "goals": GOALS, "sections": {}})
    report.write()
    model = DiffusionModel(scale.sd, device, args.precision or ("fp32" if args.smoke else "bf16"))
    runners: dict[str, Callable[[float], dict]] = {
        "environment": lambda s: environment(device),
        "flop_estimate": lambda s: flop_estimate(scale, settings),
        "generation": lambda s: generation(model, scale, settings, s),
        "specialisation": lambda s: specialisation(model, scale, settings, s),
        "teacher": lambda s: teacher(device, scale, settings, s),
        "student": lambda s: student(device, scale, settings, s),
        "episode": lambda s: episode(report.data["sections"], settings),
    }
    for name in SECTIONS:
        if name not in args.sections:
            continue
        if name == "teacher":
            model.release()  # the diffusion sections are done: free the GPU for the rest
        share = scale.section_share_s.get(name)
        if share is not None:
            allowed = budget.for_section(share)
            if allowed < 0.25 * share:
                report.data["sections"][name] = {"skipped": f"{budget.left():.0f} s of the budget left, "
                                                            f"the section needs about {share:.0f} s"}
                report.write()
                continue
            report.run(name, lambda allowed=allowed: runners[name](allowed))
        else:
            report.run(name, lambda: runners[name](0.0))
    report.data["total_seconds"] = round(time.perf_counter() - budget.started, 1)
    report.write()
    print(json.dumps(report.data, indent=2, default=str))
    return report.data


if __name__ == "__main__":
    main()
