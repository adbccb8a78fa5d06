"""Storage of the synthetic images at the reference volume: one PNG per image (before) against one
shard per partition with a preview grid (after).

Run from the repository root (``make bench``)::

    python benchmarks/bench_storage.py --output data/08_reporting/benchmark_storage.json

One episode at the ``gpu`` settings: ``synthesis.images_per_class`` = 1000 images of 84 px for each
of the 5 classes and each of the 2 samplers (``tint`` and ``textual_inversion``: the synthesis
samplers, one partition per (sampler, episode, class)), so 10 partitions of 1000 images. Each is
written both ways: the previous version's folder of ``00000.png ...`` and what ``ImageSetDataset``
saves now (``images.safetensors``, uint8 ``[N, 3, H, W]``, and ``preview.png``); the report gives the
files and bytes per episode, and the best time of ``ImageSetDataset.load`` of one partition each way
until every pixel is read (what the teacher and each student read; the files were just written, so
both ways read from the page cache). Counted: the partitions' own files; each partition's
``.done`` marker and the store's run files come on top, the same both ways.

PNG size depends on content, so two contents are measured, each labelled in the report:
``drawings``, the embedded drawings (5 classes) padded to a square on white and resized to 84 px,
cycled to 1000 per class (each PNG is compressed on its own, so repeats do not change its bytes;
white backgrounds make drawings compress far better than photos), and ``noise``, uniform random
pixels (incompressible: PNG's upper bound; generated photos lie between the two). The shard is not
compressed, so its bytes do not depend on content.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tint_distill.data.image_batch import ImageBatch  # noqa: E402
from tint_distill.data.images import is_image_file, read_rgb_image  # noqa: E402
from tint_distill.data.model_input import square_image  # noqa: E402
from tint_distill.datasets import ImageSetDataset  # noqa: E402
from tint_distill.methods import SAMPLERS  # noqa: E402

EMBEDDED = ROOT / "data" / "01_raw" / "openclipart"
CLASSES = ("fish", "fruit", "clock", "mammal", "tree")


def drawn_class(name: str, count: int, side: int) -> ImageBatch:
    """``count`` drawings of a class at ``side`` px (padded on white, as every model input), cycled."""
    files = sorted(p for p in (EMBEDDED / name).iterdir() if is_image_file(p))
    drawn = [square_image(read_rgb_image(f)).resize((side, side), Image.BILINEAR) for f in files]
    return ImageBatch.of((drawn * (count // len(drawn) + 1))[:count])


def noise(count: int, side: int, seed: int) -> ImageBatch:
    generator = torch.Generator().manual_seed(seed)
    return ImageBatch(torch.randint(0, 256, (count, 3, side, side), generator=generator, dtype=torch.uint8))


def save_png_per_image(images: ImageBatch, folder: Path) -> None:
    """How a partition was saved before shards: ``00000.png, 00001.png, ...``."""
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        image.save(folder / f"{index:05d}.png")


def files_and_bytes(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def best_load_seconds(folder: Path, repeats: int) -> float:
    """Loading a partition until its pixels are in the process's own memory (a shard is memory-mapped:
    its pages are read when touched, so copying them is part of the time; decoded PNGs are copied too)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loaded = ImageSetDataset(filepath=str(folder)).load()
        loaded.pixels.clone()
        best = min(best, time.perf_counter() - start)
    assert isinstance(loaded, ImageBatch)
    return best


def measure(partitions: dict[str, ImageBatch], folder: Path, repeats: int) -> dict:
    """One episode's partitions written both ways; files, bytes and one partition's load time."""
    ways = {"png_per_image": lambda images, target: save_png_per_image(images, target),
            "shard_and_preview": lambda images, target: ImageSetDataset(filepath=str(target)).save(images)}
    report = {}
    for way, save in ways.items():
        started = time.perf_counter()
        for key, images in partitions.items():
            save(images, folder / way / key)
        written = files_and_bytes(folder / way)
        first = folder / way / next(iter(partitions))
        report[way] = {**written, "megabytes": round(written["bytes"] / 1e6, 2),
                       "write_s": round(time.perf_counter() - started, 3),
                       "load_one_partition_s": round(best_load_seconds(first, repeats), 4)}
    first = next(iter(partitions))
    assert ImageSetDataset(filepath=str(folder / "png_per_image" / first)).load() == \
        ImageSetDataset(filepath=str(folder / "shard_and_preview" / first)).load(), "the same pixels both ways"
    before, after = report["png_per_image"], report["shard_and_preview"]
    report["files_after_over_before"] = round(after["files"] / before["files"], 5)
    report["bytes_after_over_before"] = round(after["bytes"] / before["bytes"], 3)
    report["load_speedup"] = round(before["load_one_partition_s"] / after["load_one_partition_s"], 1)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=1000, help="the gpu settings' synthesis volume")
    parser.add_argument("--image-size", type=int, default=84, help="the gpu settings' synthesis.output_size")
    parser.add_argument("--classes", type=int, default=5, help="n_way")
    parser.add_argument("--episodes", type=int, default=600, help="episodes of the reference run (for the totals)")
    parser.add_argument("--repeats", type=int, default=3, help="loads of one partition; the best counts")
    parser.add_argument("--contents", nargs="+", default=["drawings", "noise"], choices=["drawings", "noise"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    n, side, classes = args.images_per_class, args.image_size, CLASSES[:args.classes]
    report = {"benchmark": "storage", "machine": platform.machine(), "cpus": os.cpu_count(), "device": "cpu",
              "load_average_1min_at_start": round(os.getloadavg()[0], 2),  # timings on a shared machine vary
              "settings": {"images_per_class": n, "image_size": side, "classes": len(classes),
                           "samplers": list(SAMPLERS), "partitions_per_episode": len(classes) * len(SAMPLERS),
                           "episodes_at_reference": args.episodes},
              "counted": "the partitions' own files; each partition's .done marker and the store's run files "
                         "come on top, the same both ways",
              "contents": {
                  "drawings": "the embedded drawings of 5 classes padded on white, resized to the image size, "
                              "cycled (PNG compresses them far better than photos)",
                  "noise": "uniform random pixels: incompressible, PNG's upper bound"}}
    for content in args.contents:
        partitions = {}
        for sampler_index, sampler in enumerate(SAMPLERS):
            for class_index, name in enumerate(classes):
                images = (drawn_class(name, n, side) if content == "drawings"
                          else noise(n, side, seed=sampler_index * 100 + class_index))
                partitions[f"{sampler}/episode_0000/{name}"] = images
        with tempfile.TemporaryDirectory() as folder:
            measured = measure(partitions, Path(folder), args.repeats)
        for way in ("png_per_image", "shard_and_preview"):
            measured[way]["files_at_reference"] = measured[way]["files"] * args.episodes
            measured[way]["gigabytes_at_reference"] = round(measured[way]["bytes"] * args.episodes / 1e9, 1)
        report[content] = measured
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
