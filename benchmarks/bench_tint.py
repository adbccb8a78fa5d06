"""Timing of the TINT core: batched vs one-at-a-time generation and null-text inversion.

Run from the repository root::

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/bench_tint.py --output data/08_reporting/benchmark.json

One process, an offline tiny SD-1.x-shaped model built into a temporary folder, the same
settings for both paths. Each timed section runs once untimed first (warm-up). On a CUDA
machine it also times an SD-1.5-sized model with random weights (512 px, fp16); on a CPU
that part is skipped and recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from tint_distill.tint import (  # noqa: E402
    NullTextConfig,
    TextualInversionConfig,
    add_class_token,
    build_tiny_stable_diffusion,
    load_stable_diffusion,
    null_text_invert,
    null_text_invert_sequential,
    tint_sample,
    train_textual_inversion,
)

TOKEN = "<bench>"
PROMPT = f"A photo of an {TOKEN}"


def support_images(count: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields in [-1, 1] (timings do not depend on the content)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 6, 6, generator=generator) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(resolution, resolution), mode="bicubic").clamp(-1, 1)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REPEATS = 1  # set from --repeats: each timing is the best of this many runs


def timed(function, device: torch.device, repeats: int | None = None):
    """``(result, seconds)``: the best wall time of ``repeats`` runs (less noise from other processes)."""
    best, result = float("inf"), None
    for _ in range(repeats or REPEATS):
        synchronise(device)
        start = time.perf_counter()
        result = function()
        synchronise(device)
        best = min(best, time.perf_counter() - start)
    return result, best


def paired(first, second, device: torch.device):
    """Time two functions alternately (REPEATS rounds, best of each), so that a burst of load
    from another process does not favour one of them."""
    best = [float("inf"), float("inf")]
    results = [None, None]
    for _ in range(REPEATS):
        for slot, function in enumerate((first, second)):
            results[slot], seconds = timed(function, device, repeats=1)
            best[slot] = min(best[slot], seconds)
    return results[0], best[0], results[1], best[1]


def bench_textual_inversion(components, images: torch.Tensor, steps: int) -> dict:
    add_class_token(components, TOKEN, "object")
    train_textual_inversion(components, images, TOKEN, config=TextualInversionConfig(num_steps=2))  # warm-up
    config = TextualInversionConfig(num_steps=steps, learning_rate=5e-3)
    _, seconds = timed(lambda: train_textual_inversion(components, images, TOKEN, config=config), components.device)
    return {"steps": steps, "batch_size": config.batch_size, "s_per_step": seconds / steps}


def bench_null_text(components, images: torch.Tensor, config: NullTextConfig):
    warm = NullTextConfig(num_steps=2, inner_steps=2)
    null_text_invert(components, images, PROMPT, config=warm)
    null_text_invert_sequential(components, images, PROMPT, config=warm)
    sequential, seq_s, batched, batch_s = paired(
        lambda: null_text_invert_sequential(components, images, PROMPT, config=config),
        lambda: null_text_invert(components, images, PROMPT, config=config), components.device)
    report = {
        "supports": images.shape[0],
        "num_steps": config.num_steps,
        "inner_steps_max": config.inner_steps,
        "guidance_scale": config.guidance_scale,
        "inner_steps_done": {"sequential": int(sequential.inner_steps.sum()),
                             "batched": int(batched.inner_steps.sum())},
        "sequential_s": seq_s,
        "batched_s": batch_s,
        "speedup": seq_s / batch_s,
        "max_abs_diff_null_embeddings": float((sequential.null_embeddings - batched.null_embeddings).abs().max()),
    }
    return report, batched


def bench_generation(components, inverted, nulls, n_images: int, batch_size: int, guidance_scale: float) -> dict:
    def run(batch: int, count: int):
        return tint_sample(components, inverted, nulls, PROMPT, n_images=count, alpha=1.0, seed=0, batch_size=batch,
                           guidance_scale=guidance_scale, output_type="float")

    run(1, 2)
    run(batch_size, batch_size)  # warm-up
    sequential, seq_s, batched, batch_s = paired(lambda: run(1, n_images), lambda: run(batch_size, n_images),
                                                 components.device)
    return {
        "images": n_images,
        "num_steps": int(nulls.shape[1]),
        "guidance_scale": guidance_scale,
        "batch_size": batch_size,
        "sequential_images_per_s": n_images / seq_s,
        "batched_images_per_s": n_images / batch_s,
        "speedup": seq_s / batch_s,
        "max_abs_diff_images": float((sequential - batched).abs().max()),
    }


def bench_sd15_gpu(device: torch.device, steps: int, supports: int, images_count: int, batch_size: int, *,
                   ti_steps: int = 50, config=None, sample_dtype: torch.dtype = torch.float16) -> dict:
    """SD-1.5-sized random-weight model at 512 px: fp16 sampling, fp32 specialisation.

    ``config``/``sample_dtype`` exist to smoke-test this function with a small model on a CPU.
    """
    from tint_distill.tint import TinySDConfig, specialise_class
    from tint_distill.tint.models import build_sd_modules, components_from_modules
    from tint_distill.tint.tokenizer import build_clip_tokenizer

    config = config or TinySDConfig.sd15()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = build_clip_tokenizer(scratch)
    components = components_from_modules(build_sd_modules(config, seed=0), tokenizer, device=device,
                                         dtype=torch.float32)
    images = support_images(supports, config.resolution)
    ti = TextualInversionConfig(num_steps=ti_steps)
    nti = NullTextConfig(num_steps=steps)
    spec, specialise_s = timed(lambda: specialise_class(components, images, token=TOKEN, init_word="object",
                                                        ti_config=ti, nti_config=nti), device, repeats=1)
    components.to(dtype=sample_dtype)
    run = lambda count: tint_sample(components, spec.inverted_latents, spec.null_embeddings, PROMPT,  # noqa: E731
                                    n_images=count, batch_size=batch_size, output_type="uint8")
    run(batch_size)
    _, sample_s = timed(lambda: run(images_count), device)
    return {
        "model": "SD 1.5 architecture, random weights",
        "resolution": config.resolution,
        "unet_parameters": sum(p.numel() for p in components.unet.parameters()),
        "generation": {"dtype": str(sample_dtype).replace("torch.", ""), "num_steps": steps, "guidance_scale": 7.5,
                       "batch_size": batch_size, "images": images_count, "images_per_s": images_count / sample_s},
        "specialisation": {"dtype": "float32", "supports": supports, "textual_inversion_steps": ti.num_steps,
                           "null_text_steps": steps, "seconds": specialise_s,
                           "seconds_breakdown": spec.settings.get("seconds"),
                           "textual_inversion_s_per_step":
                               spec.settings["seconds"]["textual_inversion"] / ti.num_steps},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON report")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (sampling and null-text inversion)")
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--supports", type=int, default=5)
    parser.add_argument("--images", type=int, default=32, help="images generated per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ti-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="report the best of this many timed runs")
    args = parser.parse_args(argv)
    global REPEATS
    REPEATS = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    report: dict = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({platform.processor() or platform.machine()})"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "repeats": REPEATS,
    }
    with tempfile.TemporaryDirectory(prefix="bench-tint-") as scratch:
        model_dir = build_tiny_stable_diffusion(Path(scratch) / "model", resolution=args.resolution, seed=0)
        components = load_stable_diffusion(model_dir, device=device)
        report["model"] = {"kind": "tiny SD-1.x-shaped, random weights", "resolution": components.resolution,
                           "unet_parameters": sum(p.numel() for p in components.unet.parameters()),
                           "dtype": str(components.dtype)}
        images = support_images(args.supports, components.resolution)
        report["textual_inversion"] = bench_textual_inversion(components, images, args.ti_steps)
        nti = NullTextConfig(num_steps=args.steps, inner_steps=args.inner_steps)
        report["null_text_inversion"], result = bench_null_text(components, images, nti)
        report["generation"] = bench_generation(components, result.inverted_latents, result.null_embeddings,
                                                args.images, args.batch_size, nti.guidance_scale)
    if device.type == "cuda":
        report["sd15_gpu"] = bench_sd15_gpu(device, steps=25, supports=5, images_count=32, batch_size=16)
    else:
        report["sd15_gpu"] = {"skipped": "no CUDA device: the SD-1.5-sized fp16 timing needs a GPU"}
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
