"""The requirements.lock pins of benchmarks/gpu-packages.txt (standard library only: it runs
before anything is installed). ``--missing``: only those this Python does not have."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(missing_only: bool = False) -> list[str]:
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.strip().split("==", 1)
            lock[normalise(name)] = f"{name}=={version}"
    listed = (ROOT / "benchmarks" / "gpu-packages.txt").read_text().splitlines()
    wanted = [line.split("#")[0].strip() for line in listed]
    out = []
    for name in filter(None, wanted):
        if normalise(name) not in lock:
            raise SystemExit(f"{name} (benchmarks/gpu-packages.txt) is not pinned in requirements.lock")
        if missing_only:
            try:
                importlib.metadata.version(name)
                continue
            except importlib.metadata.PackageNotFoundError:
                pass
        out.append(lock[normalise(name)])
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missing", action="store_true")
    print("\n".join(pins(parser.parse_args().missing)))
