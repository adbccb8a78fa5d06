"""What the pipelines that run the diffusion model share: where the model is and how a worker loads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tint_distill.params import resolve_device
from tint_distill.tint import SDComponents, check_model_folder, load_stable_diffusion
from tint_distill.work import Worker


@dataclass(frozen=True)
class DiffusionModel:
    """A diffusion model folder and how to run it: travels with each unit of work; the worker
    that computes the unit loads it the first time and keeps it (never, if all work is done).
    ``device: auto`` is resolved where the unit runs."""

    path: Path
    device: str = "auto"
    precision: str = "fp32"

    @classmethod
    def checked(cls, path: Path, device: str = "auto", precision: str = "fp32") -> "DiffusionModel":
        """Fails before any work is planned, not at the first class, when the folder is not a model."""
        return cls(check_model_folder(path).resolve(), device, precision)  # absolute: read the same from any worker

    def load(self) -> SDComponents:
        return load_stable_diffusion(self.path, device=resolve_device(self.device), precision=self.precision)

    def on(self, worker: Worker) -> SDComponents:
        """The model loaded in ``worker`` (once per worker); the unit is recorded as run on its device."""
        components = worker.keep(self, self.load)
        worker.uses(components.device)
        return components
