"""How faithfully null-text inversion rebuilds real supports, and what it costs, per setting.

Run from the repository root (``make bench``)::

    python benchmarks/bench_reconstruction.py --output data/08_reporting/benchmark_reconstruction.json

One novel-class episode of the default run (5 classes x 5 real drawings, none seen by the
shipped generator) is specialised together, as the ``inversion`` pipeline does: grouped textual
inversion (the default steps), then null-text inversion of all 25 supports in one UNet batch, for
each ``--settings`` (S DDIM steps x inner steps). Reported per setting: the supports' pixel MSE
rebuilt from their inversion, the VAE round trip's (the bound) and their ratio, and the seconds of
the null-text inversion. Then plain DDIM inversion at the same guidance (what NTI corrects), and
the image policy: the VAE bound with the supports padded to a square (the project's policy, what
the generator was trained on) against stretched to it.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

from tint_distill.data.episodes import EpisodeSpec, assign_class_splits, sample_episodes  # noqa: E402
from tint_distill.data.images import read_rgb_image  # noqa: E402
from tint_distill.data.sources import image_folder  # noqa: E402
from tint_distill.params import settings_from_params  # noqa: E402
from tint_distill.stages.inversion import InversionSettings  # noqa: E402
from tint_distill.tint import ClassToSpecialise, load_stable_diffusion, specialise_group  # noqa: E402
from tint_distill.tint.diffusion import (decode_latents, encode_images, encode_prompts, guided_denoise,  # noqa: E402
                                         make_schedule)
from tint_distill.tint.imaging import to_model_tensor  # noqa: E402
from tint_distill.tint.null_text_inversion import ddim_invert  # noqa: E402

EMBEDDED = ROOT / "data" / "01_raw" / "openclipart"


def _episode(episode: int) -> dict[str, list]:
    """The supports of one episode of the default run, per class."""
    episodes_conf = yaml.safe_load((ROOT / "conf/base/parameters_data_episodes.yml").read_text())["data_episodes"]
    images = image_folder(EMBEDDED)
    index = assign_class_splits(images.index, episodes_conf["class_splits"])
    sampling = episodes_conf["sampling"]
    table = sample_episodes(index, EpisodeSpec(n_way=sampling["n_way"], n_shot=sampling["n_shot"],
                                               n_query=sampling["n_query"], n_episodes=episode + 1,
                                               seed=sampling["seed"]))
    rows = table[(table["episode"] == episode) & (table["role"] == "support")]
    return {name: [read_rgb_image(EMBEDDED / i) for i in group["image_id"]]
            for name, group in rows.groupby("class_name")}


def _stretched(pictures: list, resolution: int) -> torch.Tensor:
    """The old policy, for comparison: the whole image stretched to a square."""
    out = []
    for picture in pictures:
        tensor = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
        out.append(F.interpolate(tensor[None], size=(resolution, resolution), mode="bilinear", antialias=True))
    return torch.cat(out)


def _pixel_mse(components, images: torch.Tensor, latents: torch.Tensor) -> float:
    return float(((decode_latents(components, latents).cpu() - images) ** 2).mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["8x5", "16x10", "25x10"], help="SxINNER null-text settings")
    parser.add_argument("--episode", type=int, default=0)
    parser.add_argument("--ti-steps", type=int, default=None, help="default: conf/base")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--generator", type=Path, default=ROOT / "data" / "06_models" / "generator")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "conf/base/parameters_inversion.yml").read_text())["inversion"]
    settings = settings_from_params(InversionSettings, params, "inversion")
    ti_config, nti_default = settings.textual_inversion, settings.null_text
    if args.ti_steps is not None:
        ti_config = dataclasses.replace(ti_config, num_steps=args.ti_steps)
    components = load_stable_diffusion(args.generator, device=torch.device("cpu"))
    supports = _episode(args.episode)
    classes = [ClassToSpecialise(to_model_tensor(pictures, components.resolution), f"<{name}>", name)
               for name, pictures in supports.items()]
    padded = torch.cat([c.images for c in classes])
    stretched = torch.cat([_stretched(p, components.resolution) for p in supports.values()])
    report = {"benchmark": "reconstruction", "machine": platform.machine(), "cpus": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "device": "cpu", "episode": args.episode,
              "classes": list(supports), "supports": int(padded.shape[0]),
              "textual_inversion_steps": ti_config.num_steps,
              "vae_mse": {"padded": _pixel_mse(components, padded, encode_images(components, padded)),
                          "stretched": _pixel_mse(components, stretched, encode_images(components, stretched))},
              "null_text": {}}
    for setting in args.settings:
        steps, inner = (int(v) for v in setting.split("x"))
        config = dataclasses.replace(nti_default, num_steps=steps, inner_steps=inner)
        specs = specialise_group(components, classes, ti_config=ti_config, nti_config=config)
        mse = sum(s.reconstruction["mse"] * len(s.support_ids) for s in specs) / report["supports"]
        vae = sum(s.reconstruction["vae_mse"] * len(s.support_ids) for s in specs) / report["supports"]
        report["null_text"][setting] = {"mse": mse, "vae_mse": vae, "ratio": mse / vae,
                                        "null_text_seconds": specs[0].diagnostics["seconds"]["null_text"],
                                        "textual_inversion_seconds": specs[0].diagnostics["seconds"]["textual_inversion"]}
        print(setting, json.dumps(report["null_text"][setting]), flush=True)
        if steps == nti_default.num_steps:  # plain DDIM inversion with the same tokens, for comparison
            prompts = [specs[g].prompt for g in range(len(specs))]
            owner = torch.arange(len(specs)).repeat_interleave(torch.tensor([len(s.support_ids) for s in specs]))
            cond = encode_prompts(components, prompts)[owner]
            latents = encode_images(components, padded)
            schedule = make_schedule(components, steps, config.timestep_spacing)
            start = time.perf_counter()
            z_t = ddim_invert(components, latents, cond, num_steps=steps, schedule=schedule)[-1]
            with torch.no_grad():
                plain = guided_denoise(components, schedule, z_t, cond, encode_prompts(components, [""]),
                                       config.guidance_scale)
            report["plain_ddim_inversion"] = {"steps": steps, "mse": _pixel_mse(components, padded, plain),
                                              "seconds": time.perf_counter() - start}
            report["plain_ddim_inversion"]["ratio"] = report["plain_ddim_inversion"]["mse"] / vae
    report["default"] = f"{nti_default.num_steps}x{nti_default.inner_steps}"
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
