"""Timing of the TINT engine: grouped against per-class specialisation, precision, sampling.

Run from the repository root (``make bench``)::

    HF_HUB_OFFLINE=1 python benchmarks/bench_tint.py --threads 1 --repeats 2 --output data/08_reporting/benchmark.json

One process, one model (by default the shipped offline generator, data/06_models/generator),
real support drawings (data/01_raw/openclipart, 5 classes x 5 shots), the same settings for the
paths compared. Two paths are timed alternately (best of ``--repeats`` rounds each), after an
untimed warm-up, so a burst of load from another process does not favour one of them.

Per-class paths:
- ``reference``: textual inversion as this project ran it before the grouped engine, and as the
  diffusers example does: AdamW over the whole embedding matrix, every other row copied back
  after each step, one class at a time. It learns the same embedding (reported).
- ``per_class``: the grouped engine with groups of one class.

The Stable-Diffusion-1.5-sized timings on a GPU are ``bench_gpu.py``'s (``make bench-gpu``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tint_distill.tint import (  # noqa: E402
    ClassToSpecialise,
    NullTextConfig,
    TextualInversionConfig,
    add_class_token,
    load_stable_diffusion,
    null_text_invert,
    reconstruct_latents,
    specialise_class,
    specialise_group,
    tint_sample,
    train_textual_inversion,
    train_textual_inversion_group,
)
from tint_distill.tint.diffusion import encode_images, tokenize  # noqa: E402
from tint_distill.tint.imaging import to_model_tensor  # noqa: E402

DRAWINGS = ROOT / "data" / "01_raw" / "openclipart"
REPEATS = 1  # set from --repeats


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int | None = None):
    """``(result, seconds)``: the best wall time of ``repeats`` runs."""
    best, result = float("inf"), None
    for _ in range(repeats or REPEATS):
        synchronise(device)
        start = time.perf_counter()
        result = function()
        synchronise(device)
        best = min(best, time.perf_counter() - start)
    return result, best


def alternately(functions: dict, device: torch.device) -> tuple[dict, dict]:
    """Time several functions in turn, ``REPEATS`` rounds, best of each: ``(results, seconds)``."""
    results, seconds = {}, {name: float("inf") for name in functions}
    for _ in range(REPEATS):
        for name, function in functions.items():
            results[name], took = timed(function, device, repeats=1)
            seconds[name] = min(seconds[name], took)
    return results, seconds


def support_sets(classes: int, shots: int, resolution: int) -> tuple[list[str], list[torch.Tensor]]:
    """``shots`` real drawings of each of ``classes`` classes, at the model resolution."""
    names = sorted(p.name for p in DRAWINGS.iterdir() if p.is_dir())[:classes]
    if len(names) < classes:
        raise SystemExit(f"need {classes} class folders under {DRAWINGS}, found {len(names)}")
    sets = []
    for name in names:
        files = sorted((DRAWINGS / name).glob("*.png"))[:shots]
        images = []
        for file in files:
            with Image.open(file) as image:
                image.draft("RGB", (256, 256))
                images.append(image.copy())
        sets.append(to_model_tensor(images, resolution))
    return names, sets


def reference_textual_inversion(components, images: torch.Tensor, token: str,
                                config: TextualInversionConfig) -> torch.Tensor:
    """Textual inversion as before the grouped engine (and as the diffusers example does it): AdamW
    over the whole embedding matrix, every other row restored after each step, the loss read back
    every step. Same random draws as the engine, so the same embedding to rounding."""
    if components.scheduler.config.prediction_type != "epsilon":
        raise SystemExit("the reference path is written for epsilon-prediction models")
    encoder, unet = components.text_encoder, components.unet
    token_id = int(components.tokenizer.convert_tokens_to_ids(token))
    input_ids = tokenize(components, [config.prompt_template.format(token=token)])
    latents = encode_images(components, images)
    t_max = min(config.t_max, int(components.scheduler.config.num_train_timesteps))
    alphas = components.scheduler.alphas_cumprod.to(components.device, torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    weight = encoder.get_input_embeddings().weight
    original = weight.detach().clone()
    weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([weight], lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    batch = config.batch_size
    try:
        for _ in range(config.num_steps):
            index = torch.randint(latents.shape[0], (batch,), generator=generator)
            noise = torch.randn((batch, *latents.shape[1:]), generator=generator).to(components.device)
            timesteps = torch.randint(config.t_min, t_max, (batch,), generator=generator).to(components.device)
            z0 = latents[index.to(latents.device)].float()
            a = alphas[timesteps].view(-1, 1, 1, 1)
            noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
            hidden = encoder(input_ids.expand(batch, -1))[0]
            prediction = unet(noisy.to(components.dtype), timesteps, encoder_hidden_states=hidden.to(components.dtype)).sample
            loss = torch.nn.functional.mse_loss(prediction.float(), noise)
            float(loss.detach())  # the per-step read-back of the old loop
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                weight[:token_id] = original[:token_id]
                weight[token_id + 1:] = original[token_id + 1:]
    finally:
        weight.requires_grad_(False)
        weight.grad = None
    return weight[token_id].detach().float().cpu().clone()


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def fresh_tokens(components, tokens: list[str]) -> None:
    """Every path starts from the same initial rows."""
    for token in tokens:
        add_class_token(components, token, "object")


def bench_textual_inversion(components, supports: list[torch.Tensor], tokens: list[str], steps: int) -> dict:
    config = TextualInversionConfig(num_steps=steps, learning_rate=5e-3, log_every=max(steps, 1))
    warm = dataclasses.replace(config, num_steps=2)
    reference_textual_inversion(components, supports[0], tokens[0], warm)
    train_textual_inversion_group(components, supports, tokens, config=warm)

    def reference():
        fresh_tokens(components, tokens)
        return [reference_textual_inversion(components, x, t, config) for x, t in zip(supports, tokens)]

    def per_class():
        fresh_tokens(components, tokens)
        return [train_textual_inversion(components, x, t, config=config) for x, t in zip(supports, tokens)]

    def grouped():
        fresh_tokens(components, tokens)
        return train_textual_inversion_group(components, supports, tokens, config=config)

    results, seconds = alternately({"reference": reference, "per_class": per_class, "grouped": grouped},
                                   components.device)
    return {
        "classes": len(tokens),
        "steps": steps,
        "seconds": seconds,
        "class_steps_per_s": {name: len(tokens) * steps / s for name, s in seconds.items()},
        "speedup_grouped_vs_per_class": seconds["per_class"] / seconds["grouped"],
        "speedup_grouped_vs_reference": seconds["reference"] / seconds["grouped"],
        "max_abs_diff_embedding": {"grouped_vs_per_class": _max_diff(results["grouped"], results["per_class"]),
                                   "grouped_vs_reference": _max_diff(results["grouped"], results["reference"])},
    }


def bench_episode(components, supports: list[torch.Tensor], tokens: list[str], ti_steps: int,
                  nti: NullTextConfig) -> dict:
    """A whole episode specialised (TI then NTI of every support), three ways."""
    ti = TextualInversionConfig(num_steps=ti_steps, learning_rate=5e-3, log_every=max(ti_steps, 1))
    prompts = [ti.prompt_template.format(token=t) for t in tokens]

    def reference():
        out = []
        for x, token, prompt in zip(supports, tokens, prompts):
            add_class_token(components, token, "object")
            embedding = reference_textual_inversion(components, x, token, ti)
            out.append((embedding, null_text_invert(components, x, prompt, config=nti)))
        return out

    def per_class():
        return [specialise_class(components, x, token=t, init_word="object", ti_config=ti, nti_config=nti)
                for x, t in zip(supports, tokens)]

    def grouped():
        return specialise_group(components, [ClassToSpecialise(x, t, "object") for x, t in zip(supports, tokens)],
                                ti_config=ti, nti_config=nti)

    results, seconds = alternately({"reference": reference, "per_class": per_class, "grouped": grouped},
                                   components.device)
    grouped_nulls = [s.null_embeddings for s in results["grouped"]]
    return {
        "classes": len(tokens),
        "shots": int(supports[0].shape[0]),
        "textual_inversion_steps": ti_steps,
        "null_text": {"num_steps": nti.num_steps, "inner_steps": nti.inner_steps, "batch_size": nti.batch_size},
        "seconds": seconds,
        "speedup_grouped_vs_per_class": seconds["per_class"] / seconds["grouped"],
        "speedup_grouped_vs_reference": seconds["reference"] / seconds["grouped"],
        "grouped_seconds_split": results["grouped"][0].diagnostics["seconds"],
        "max_abs_diff": {
            "embedding_grouped_vs_per_class": _max_diff([s.token_embedding for s in results["grouped"]],
                                                        [s.token_embedding for s in results["per_class"]]),
            "null_embeddings_grouped_vs_per_class": _max_diff(grouped_nulls,
                                                              [s.null_embeddings for s in results["per_class"]]),
        },
    }


def bench_precision(model_dir: Path, device: torch.device, supports: list[torch.Tensor], tokens: list[str],
                    ti_steps: int, nti: NullTextConfig) -> dict:
    """How far bf16 autocast moves grouped TI losses, embeddings and NTI reconstructions from fp32."""
    ti = TextualInversionConfig(num_steps=ti_steps, learning_rate=5e-3, log_every=max(ti_steps, 1))
    report, learned, start = {}, {}, None
    for precision in ("fp32", "bf16"):
        components = load_stable_diffusion(model_dir, device=device, precision=precision)
        fresh_tokens(components, tokens)
        if start is None:
            ids = [components.tokenizer.convert_tokens_to_ids(t) for t in tokens]
            start = components.text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
        losses = [[] for _ in tokens]
        started = time.perf_counter()
        embeddings = train_textual_inversion_group(components, supports, tokens, config=ti, losses=losses)
        ti_s = time.perf_counter() - started
        prompts = [ti.prompt_template.format(token=t) for t in tokens]
        started = time.perf_counter()
        inverted = [null_text_invert(components, x, p, config=nti) for x, p in zip(supports, prompts)]
        nti_s = time.perf_counter() - started
        errors = []
        for x, p, result in zip(supports, prompts, inverted):
            target = encode_images(components, x)
            rebuilt = reconstruct_latents(components, result.inverted_latents, result.null_embeddings, p, config=nti)
            errors.append(float(((rebuilt.float() - target.float()) ** 2).mean()))
        tail = max(1, ti_steps // 2)
        learned[precision] = torch.stack(embeddings)
        report[precision] = {
            "textual_inversion_loss_mean_last_half": sum(sum(l[-tail:]) / tail for l in losses) / len(losses),
            "null_text_final_mse_mean": sum(float(r.final_mse.mean()) for r in inverted) / len(inverted),
            "reconstruction_latent_mse_mean": sum(errors) / len(errors),
            "seconds": {"textual_inversion": ti_s, "null_text": nti_s},
        }
    step32, step16 = learned["fp32"] - start, learned["bf16"] - start
    report["bf16_vs_fp32"] = {
        "textual_inversion_loss_relative_change": report["bf16"]["textual_inversion_loss_mean_last_half"]
        / report["fp32"]["textual_inversion_loss_mean_last_half"] - 1,
        "embedding_update_cosine_min": float(torch.nn.functional.cosine_similarity(step32, step16, dim=1).min()),
        "embedding_update_relative_difference_max": float(((step16 - step32).norm(dim=1) / step32.norm(dim=1)).max()),
        "reconstruction_mse_ratio": report["bf16"]["reconstruction_latent_mse_mean"]
        / report["fp32"]["reconstruction_latent_mse_mean"],
    }
    return report


def bench_attention(components, supports: list[torch.Tensor], tokens: list[str], steps: int) -> dict:
    """Grouped TI with PyTorch's scaled-dot-product attention (diffusers' default) vs the classic
    attention processor: is SDPA worth keeping here?"""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    config = TextualInversionConfig(num_steps=steps, learning_rate=5e-3, log_every=max(steps, 1))

    def with_processor(processor):
        components.unet.set_attn_processor(processor)
        fresh_tokens(components, tokens)
        return train_textual_inversion_group(components, supports, tokens, config=config)

    _, seconds = alternately({"sdpa": lambda: with_processor(AttnProcessor2_0()),
                              "classic": lambda: with_processor(AttnProcessor())}, components.device)
    components.unet.set_attn_processor(AttnProcessor2_0())
    return {"grouped_textual_inversion_steps": steps, "seconds": seconds,
            "speedup_sdpa_vs_classic": seconds["classic"] / seconds["sdpa"]}


def bench_generation(components, inverted, nulls, prompt: str, n_images: int, batch_size: int) -> dict:
    def run(batch: int, count: int):
        return tint_sample(components, inverted, nulls, prompt, n_images=count, alpha=1.0, seed=0, batch_size=batch,
                           output_type="float")

    run(1, 2)
    run(batch_size, batch_size)
    results, seconds = alternately({"sequential": lambda: run(1, n_images),
                                    "batched": lambda: run(batch_size, n_images)}, components.device)
    return {
        "images": n_images,
        "num_steps": int(nulls.shape[1]),
        "batch_size": batch_size,
        "images_per_s": {name: n_images / s for name, s in seconds.items()},
        "speedup": seconds["sequential"] / seconds["batched"],
        "max_abs_diff_images": float((results["sequential"] - results["batched"]).abs().max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON report")
    parser.add_argument("--model", type=Path, default=ROOT / "data" / "06_models" / "generator",
                        help="a local SD 1.x folder (default: the shipped offline generator)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--ti-steps", type=int, default=40, help="TI steps of the textual-inversion comparison")
    parser.add_argument("--episode-ti-steps", type=int, default=100,
                        help="TI steps of the episode comparison: 4x the NTI optimiser steps of a class's 5 "
                             "supports at the defaults, the reference's proportion (5000 : 5 x 25 x 10)")
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps of null-text inversion and sampling")
    parser.add_argument("--inner-steps", type=int, default=1, help="NTI inner steps of the episode (reference: 10)")
    parser.add_argument("--images", type=int, default=32, help="images generated per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip", nargs="*", default=[], choices=["precision", "attention", "generation"])
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
    components = load_stable_diffusion(args.model, device=device)
    names, supports = support_sets(args.classes, args.shots, components.resolution)
    tokens = [f"<bench-{name}>" for name in names]
    fresh_tokens(components, tokens)
    report["model"] = {"path": str(args.model), "resolution": components.resolution,
                       "unet_parameters": sum(p.numel() for p in components.unet.parameters())}
    report["supports"] = {"classes": names, "shots": args.shots}
    nti = NullTextConfig(num_steps=args.steps, inner_steps=args.inner_steps)
    report["textual_inversion"] = bench_textual_inversion(components, supports, tokens, args.ti_steps)
    report["episode_specialisation"] = bench_episode(components, supports, tokens, args.episode_ti_steps, nti)
    if "attention" not in args.skip:
        report["attention"] = bench_attention(components, supports, tokens, args.ti_steps)
    if "precision" not in args.skip:
        # NTI as the offline default runs it (conf/base): 8 DDIM steps, 5 inner steps
        report["precision"] = bench_precision(args.model, device, supports, tokens, args.ti_steps,
                                              NullTextConfig(num_steps=8, inner_steps=5))
    if "generation" not in args.skip:
        prompt = TextualInversionConfig().prompt_template.format(token=tokens[0])
        inverted = null_text_invert(components, supports[0], prompt, config=nti)
        report["generation"] = bench_generation(components, inverted.inverted_latents, inverted.null_embeddings,
                                                prompt, args.images, args.batch_size)
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
