"""Measure what a CPU budget gives: ``python -m tint_distill.pretraining [--out DIR] [--vae-seconds S] ...``.

Pre-trains on the base classes of the embedded drawings (a few images per class held out),
then reports the held-out VAE reconstruction MSE, saves a sample grid per class and measures
class fidelity with a nearest-prototype EfficientNet-Lite0 classifier (prototypes from real
training images of each base class). Writes ``report.json``, PNG grids and the model folder
under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

BASE_CLASSES = ("mammal", "bug", "dessert", "beverage", "meat", "bread", "sport", "toy", "holiday", "party",
                "clothing", "smiley", "stickman", "boat", "computer", "weapon")
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "data" / "01_raw" / "openclipart"


def main(argv: list[str] | None = None) -> dict:
    from tint_distill.data.sources import image_folder
    from tint_distill.distill.teacher import PrototypeClassifier, extract_features, load_efficientnet_lite0
    from tint_distill.tint import TinySDConfig, load_stable_diffusion
    from tint_distill.tint.imaging import to_pil
    from tint_distill.tint.models import json_safe

    from tint_distill.data.grids import image_grid

    from .quality import class_fidelity, sample_prompts, vae_reconstruction_error
    from .trainer import PretrainingConfig, pretrain_generator, square_tensors

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--out", default="/tmp/pretrain_check")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--unet-channels", default="64,128")
    parser.add_argument("--vae-steps", type=int, default=100000)
    parser.add_argument("--unet-steps", type=int, default=100000)
    parser.add_argument("--vae-seconds", type=float, default=180)
    parser.add_argument("--unet-seconds", type=float, default=480)
    parser.add_argument("--holdout", type=int, default=4, help="held-out images per class")
    parser.add_argument("--prototypes", type=int, default=10, help="real images per class for the classifier")
    parser.add_argument("--samples", type=int, default=8, help="generated images per class")
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    collection = image_folder(args.root)
    index = collection.index
    rng = random.Random(args.seed)
    train_images, train_names, heldout, heldout_names, proto_images, proto_names = [], [], [], [], [], []
    for name in BASE_CLASSES:
        ids = sorted(index.loc[index["class_name"] == name, "image_id"])
        rng.shuffle(ids)
        images = [collection.load(i) for i in ids]
        heldout += images[:args.holdout]
        heldout_names += [name] * len(images[:args.holdout])
        train_images += images[args.holdout:]
        train_names += [name] * len(images[args.holdout:])
        proto_images += images[args.holdout:args.holdout + args.prototypes]
        proto_names += [name] * len(images[args.holdout:args.holdout + args.prototypes])
    timings["load_data"] = time.perf_counter() - start

    channels = tuple(int(c) for c in args.unet_channels.split(","))
    config = PretrainingConfig(
        resolution=args.resolution,
        model=TinySDConfig(resolution=args.resolution, unet_block_out_channels=channels),
        vae_steps=args.vae_steps, unet_steps=args.unet_steps, vae_time_budget=args.vae_seconds,
        unet_time_budget=args.unet_seconds, vae_learning_rate=args.vae_lr,
        unet_learning_rate=args.unet_lr, seed=args.seed, log_every=50,
    )
    pipeline, history = pretrain_generator(train_images, train_names, config)
    timings.update(vae=history["vae_seconds"], latent_bank=history["latent_bank_seconds"],
                   unet=history["unet_seconds"], pretraining_total=history["total_seconds"])
    pipeline.save_pretrained(out / "model")
    components = load_stable_diffusion(out / "model")

    start = time.perf_counter()
    mse_heldout = vae_reconstruction_error(components, heldout)
    mse_train = vae_reconstruction_error(components, train_images[::10])
    recon = components.vae.decode(components.vae.encode(square_tensors(heldout[:16], args.resolution))
                                  .latent_dist.mean).sample
    image_grid([("held-out", to_pil(square_tensors(heldout[:16], args.resolution))),
                ("VAE reconstruction", to_pil(recon.clamp(-1, 1)))], cell_size=64).save(out / "vae_recon.png")
    timings["vae_eval"] = time.perf_counter() - start

    start = time.perf_counter()
    prompts = [config.prompt_template.format(name=name) for name in BASE_CLASSES]
    samples = sample_prompts(components, prompts, args.samples, seed=args.seed, steps=25, guidance_scale=7.5)
    by_class = {name: samples[prompt] for name, prompt in zip(BASE_CLASSES, prompts)}
    image_grid([(name, by_class[name]) for name in BASE_CLASSES], cell_size=64).save(out / "samples_all.png")
    timings["sampling"] = time.perf_counter() - start

    start = time.perf_counter()
    backbone = load_efficientnet_lite0()
    classifier = PrototypeClassifier(temperature=0.1).fit(
        extract_features(backbone, proto_images), [BASE_CLASSES.index(n) for n in proto_names])

    def classify(images):
        logits = classifier.logits(extract_features(backbone, list(images)))
        return [BASE_CLASSES[i] for i in logits.argmax(1).tolist()]

    fidelity = class_fidelity(by_class, classify)
    # references: the same classifier on held-out real images at full size and at the model's resolution
    low_res = to_pil(square_tensors(heldout, args.resolution))
    real_full = class_fidelity({n: [im for im, m in zip(heldout, heldout_names) if m == n] for n in BASE_CLASSES},
                               classify)
    real_low = class_fidelity({n: [im for im, m in zip(low_res, heldout_names) if m == n] for n in BASE_CLASSES},
                              classify)
    heldout_recon = to_pil(components.vae.decode(components.vae.encode(square_tensors(heldout, args.resolution))
                                                 .latent_dist.mean).sample.clamp(-1, 1))
    real_recon = class_fidelity({n: [im for im, m in zip(heldout_recon, heldout_names) if m == n]
                                 for n in BASE_CLASSES}, classify)
    unconditional = sample_prompts(components, [""], args.samples * 2, seed=args.seed + 7, steps=25,
                                   guidance_scale=1.0)[""]
    image_grid([("unconditional", unconditional)], cell_size=64).save(out / "samples_unconditional.png")
    timings["fidelity"] = time.perf_counter() - start

    report = {
        "settings": {"args": vars(args), "n_train": len(train_images), "n_heldout": len(heldout),
                     "config": json_safe(config)},
        "vae_mse_heldout": mse_heldout, "vae_mse_train_subset": mse_train,
        "scaling_factor": history["scaling_factor"],
        "vae_steps_done": history["vae_steps_done"], "unet_steps_done": history["unet_steps_done"],
        "vae_loss_first_last": [history["vae_loss"][:20], history["vae_loss"][-20:]],
        "unet_loss_mean_first50_last50": [sum(history["unet_loss"][:50]) / max(1, len(history["unet_loss"][:50])),
                                          sum(history["unet_loss"][-50:]) / max(1, len(history["unet_loss"][-50:]))],
        "fidelity_generated": fidelity, "fidelity_real_heldout_full_res": real_full,
        "fidelity_real_heldout_model_res": real_low,
        "fidelity_real_heldout_vae_reconstruction": real_recon, "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "history.json").write_text(json.dumps({k: v for k, v in history.items()}, indent=0))
    print(json.dumps({k: v for k, v in report.items() if k not in ("settings", "vae_loss_first_last")}, indent=1))
    return report


if __name__ == "__main__":
    main()
