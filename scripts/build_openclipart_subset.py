"""Rebuild the embedded default data set from Debian's ``openclipart-png`` package.

    apt-get install openclipart-png        # public-domain drawings, /usr/share/openclipart/png
    python scripts/build_openclipart_subset.py

Writes ``data/01_raw/openclipart/<class>/<image>.png`` (RGB, flattened on white, longer side at
most 128 px) and ``data/01_raw/openclipart/SOURCES.csv`` (where each image came from). The
selection is deterministic: the same package version gives the same files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
from pathlib import Path

from tint_distill.data.images import ImageReadError, read_rgb_image

SOURCE_ROOT = Path("/usr/share/openclipart/png")

# class name (one English word, so it is a single CLIP token where possible) -> subject folders
CLASSES: dict[str, tuple[str, ...]] = {
    "mammal": ("animals/mammals",),
    "bird": ("animals/birds",),
    "bug": ("animals/bugs",),
    "fish": ("animals/fish",),
    "fruit": ("food/fruit",),
    "dessert": ("food/desserts",),
    "beverage": ("food/beverages",),
    "meat": ("food/meats_and_eggs",),
    "bread": ("food/breads_and_carbs",),
    "music": ("recreation/music",),
    "sport": ("recreation/sports",),
    "toy": ("recreation/toys",),
    "holiday": ("recreation/holiday",),
    "party": ("recreation/party",),
    "clothing": ("people/clothing",),
    "body": ("people/bodypart",),
    "smiley": ("people/smilies",),
    "stickman": ("people/stickmen",),
    "vehicle": ("transportation/vehicles",),
    "boat": ("transportation/boating",),
    "computer": ("computer/hardware",),
    "house": ("buildings/homes",),
    "weapon": ("tools/weapons",),
    "flower": ("plants/flowers",),
    "tree": ("plants/trees",),
    "weather": ("signs_and_symbols/weather",),
    "clock": ("signs_and_symbols/clocks",),
    "book": ("education/books",),
}


def package_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "openclipart-png"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def select(files: list[Path], limit: int) -> list[Path]:
    """A deterministic, spread-out choice: order by a hash of the relative path."""
    keyed = sorted(files, key=lambda p: hashlib.sha1(p.relative_to(SOURCE_ROOT).as_posix().encode()).hexdigest())
    return sorted(keyed[:limit])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("data/01_raw/openclipart"))
    parser.add_argument("--per-class", type=int, default=40, help="at most this many images per class")
    parser.add_argument("--max-side", type=int, default=128)
    args = parser.parse_args()
    if not SOURCE_ROOT.is_dir():
        raise SystemExit(f"{SOURCE_ROOT} not found: install Debian's openclipart-png package first.")
    if args.output.exists():
        shutil.rmtree(args.output)
    version = package_version()
    records = []
    for name, folders in CLASSES.items():
        files = sorted(p for folder in folders for p in (SOURCE_ROOT / folder).rglob("*") if p.suffix.lower() == ".png")
        kept = 0
        for source in select(files, args.per_class * 2):
            if kept == args.per_class:
                break
            try:
                image = read_rgb_image(source, max_side=args.max_side)
            except ImageReadError as error:
                print(f"skipped {error}")
                continue
            stem = source.stem.lower().replace(" ", "_")[:60]
            target = args.output / name / f"{stem}.png"
            suffix = 2
            while target.exists():  # different source folders may hold the same file name
                target = args.output / name / f"{stem}_{suffix}.png"
                suffix += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, optimize=True)
            records.append((name, target.name, source.relative_to(SOURCE_ROOT).as_posix(), version))
            kept += 1
        if kept < 20:
            raise SystemExit(f"class '{name}' kept only {kept} images; at least 20 are required.")
        print(f"{name:10s} {kept:3d} images")
    with (args.output / "SOURCES.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_name", "file", "openclipart_png_path", "debian_package_version"])
        writer.writerows(records)
    total = sum(p.stat().st_size for p in args.output.rglob("*.png"))
    print(f"{len(records)} images in {len(CLASSES)} classes, {total / 1e6:.1f} MB -> {args.output}")


if __name__ == "__main__":
    main()
