"""Fine-tune the shipped generator or train from scratch? The task's domain generator at a fixed time
budget, on a task folder's ``unlabeled/`` images (prompt "a photo"), judged on its ``test/`` images:
held-out VAE error (MSE in [-1, 1]), held-out denoising loss (latents scaled to unit std, "a photo",
t in 100..900, fixed noise) and a grid of samples per run. Runs one after another in one process.

    python benchmarks/bench_domain_generator.py --task /tmp/fm --vae-seconds 60 --unet-seconds 180 \\
        --runs generator:1,scratch:1,generator:0.3 --output data/08_reporting/benchmark_domain_generator.json

A run is ``start:lr_scale``: start ``generator`` (the shipped one) or ``scratch``; learning rates are
``lr_scale`` x PretrainingConfig's (VAE 2e-3, UNet 1e-3, text encoder 1e-4).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from tint_distill.data.grids import image_grid
from tint_distill.data.images import is_image_file
from tint_distill.pretraining.quality import sample_prompts, vae_reconstruction_error
from tint_distill.pretraining.trainer import PretrainingConfig, pretrain_generator
from tint_distill.tint.diffusion import add_noise, noise_level
from tint_distill.tint.imaging import to_model_tensor
from tint_distill.tint.models import components_from_modules
from tint_distill.tint.tokenizer import prompt_token_ids

PROMPT = "a photo"


@torch.no_grad()
def heldout_denoising(pipe, held: list[Image.Image], resolution: int) -> float:
    z = pipe.vae.encode(to_model_tensor(held, resolution)).latent_dist.mean * pipe.vae.config.scaling_factor
    generator = torch.Generator().manual_seed(0)
    hidden = pipe.text_encoder(prompt_token_ids(pipe.tokenizer, [PROMPT]))[0].expand(z.shape[0], -1, -1)
    losses = []
    for t in (100, 300, 500, 700, 900):
        noise = torch.randn(z.shape, generator=generator)
        steps = torch.full((z.shape[0],), t)
        a = noise_level(pipe.scheduler.alphas_cumprod.float(), steps)
        losses.append(float((pipe.unet(add_noise(z, noise, a), steps, encoder_hidden_states=hidden).sample - noise)
                            .pow(2).mean()))
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help="a task folder with unlabeled/ and test/<class>/")
    parser.add_argument("--generator", default="data/06_models/generator")
    parser.add_argument("--vae-seconds", type=float, default=60)
    parser.add_argument("--unet-seconds", type=float, default=180)
    parser.add_argument("--runs", default="generator:1,scratch:1,generator:0.3")
    parser.add_argument("--heldout-every", type=int, default=4, help="every n-th test image is held out")
    parser.add_argument("--output", default="data/08_reporting/benchmark_domain_generator.json")
    args = parser.parse_args(argv)
    task = Path(args.task)
    train = [Image.open(p).convert("RGB") for p in sorted((task / "unlabeled").rglob("*")) if is_image_file(p)]
    held = [Image.open(p).convert("RGB") for p in sorted((task / "test").rglob("*")) if is_image_file(p)]
    held = held[::args.heldout_every]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    report = {"task": str(task), "training_images": len(train), "heldout_images": len(held),
              "vae_seconds": args.vae_seconds, "unet_seconds": args.unet_seconds, "threads": torch.get_num_threads(),
              "runs": {}}
    for run in args.runs.split(","):
        start, scale = run.split(":")
        config = PretrainingConfig(vae_steps=2000, unet_steps=4000, vae_time_budget=args.vae_seconds,
                                   unet_time_budget=args.unet_seconds, vae_learning_rate=2e-3 * float(scale),
                                   unet_learning_rate=1e-3 * float(scale), text_encoder_learning_rate=1e-4 * float(scale),
                                   warmup_steps=20, latent_augmentations=4, prompt_template="{name}", log_every=50)
        began = time.perf_counter()
        pipe, history = pretrain_generator(train, [PROMPT] * len(train), config,
                                           start_from=args.generator if start == "generator" else None)
        result = {"seconds": time.perf_counter() - began, "vae_steps": history["vae_steps_done"],
                  "unet_steps": history["unet_steps_done"],
                  "vae_mse_heldout": vae_reconstruction_error(pipe.vae, held, config.resolution),
                  "denoising_loss_heldout": heldout_denoising(pipe, held, config.resolution)}
        report["runs"][run] = result
        print(run, json.dumps(result), flush=True)
        components = components_from_modules({n: getattr(pipe, n) for n in ("unet", "vae", "text_encoder", "scheduler")},
                                             pipe.tokenizer)
        samples = sample_prompts(components, [PROMPT], 16, steps=20, guidance_scale=3.0)[PROMPT]
        grid = Path(args.output).with_name(f"{Path(args.output).stem}_{start}_{scale}.png")
        image_grid([(run, samples)], cell_size=48, title=f"{run}: VAE MSE {result['vae_mse_heldout']:.4f}, "
                   f"denoising {result['denoising_loss_heldout']:.4f}").save(grid)
    Path(args.output).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
