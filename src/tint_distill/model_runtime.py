"""What the pipelines that run the diffusion model share: lazy loading."""

from __future__ import annotations

from pathlib import Path

from tint_distill.params import resolve_device
from tint_distill.tint import SDComponents, check_model_folder, load_stable_diffusion


class ModelOnDemand:
    """Loads the diffusion model the first time some work needs it (never, if all is done)."""

    def __init__(self, path: Path, device: str = "auto", precision: str = "fp32"):
        self.path = check_model_folder(path)  # fail before any work is planned, not at the first class
        self.device, self.precision = device, precision
        self._components: SDComponents | None = None

    def get(self) -> SDComponents:
        if self._components is None:
            device = resolve_device(self.device)
            self._components = load_stable_diffusion(self.path, device=device, precision=self.precision)
        return self._components
