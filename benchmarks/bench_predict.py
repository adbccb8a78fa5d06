"""Throughput of the ``predict`` pipeline's work: files -> decoded, resized -> ONNX Runtime -> rows.

Run from the repository root (``make bench``)::

    python benchmarks/bench_predict.py --output data/08_reporting/benchmark_predict.json

A 5-class student (the default ``resnet10t_half``, 32 px) exported to ONNX classifies two folders
made from the embedded drawings: the drawings saved as 32 x 32 px PNGs (the goal: at least 1,000
images/s on the 2-core CPU machine) and the drawings as shipped (up to 128 px, more to decode).
Each folder is classified ``--repeats`` times with ``classify_files`` (what the ``predict`` node
runs); the best time counts. The student's weights do not change the time, so it is not trained.
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

from tint_distill.data.images import is_image_file, read_rgb_image  # noqa: E402
from tint_distill.distill.export import OnnxClassifier, classify_files, export_onnx  # noqa: E402
from tint_distill.distill.student import create_student  # noqa: E402

EMBEDDED = ROOT / "data" / "01_raw" / "openclipart"


def _drawings(limit: int) -> list[Path]:
    files = sorted(p for p in EMBEDDED.rglob("*") if is_image_file(p))
    return (files * (limit // len(files) + 1))[:limit]


def _timed(classifier: OnnxClassifier, files: list[Path], repeats: int, batch_size: int) -> dict:
    best, rows = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        rows = classify_files(classifier, files, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    failed = sum(1 for r in rows if r["error"])
    return {"images": len(files), "unreadable": failed, "best_seconds": round(best, 4),
            "images_per_s": round(len(files) / best, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="files per folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    classes = ["a", "b", "c", "d", "e"]
    classifier = OnnxClassifier(export_onnx(create_student(num_classes=5, image_size=32), 32, classes))
    drawings = _drawings(args.images)
    report = {"benchmark": "predict", "machine": platform.machine(), "cpus": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "student": "resnet10t_half", "image_size": 32,
              "batch_size": args.batch_size, "goal_images_per_s_at_32px": 1000, "device": "cpu"}
    with tempfile.TemporaryDirectory() as folder:
        small = []
        for position, file in enumerate(drawings):
            target = Path(folder) / f"{position:05d}.png"
            read_rgb_image(file).resize((32, 32)).save(target)
            small.append(target)
        report["png_32px"] = _timed(classifier, small, args.repeats, args.batch_size)
    report["drawings_as_shipped"] = _timed(classifier, drawings, args.repeats, args.batch_size)
    report["meets_goal"] = report["png_32px"]["images_per_s"] >= 1000
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
