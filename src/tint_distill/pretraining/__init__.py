"""Pre-training a small SD-1.x-shaped generator from scratch (CPU), and checks of its quality."""

from .quality import class_fidelity, sample_prompts, vae_reconstruction_error
from .trainer import PretrainingConfig, augment, pipeline_components, pretrain_generator

__all__ = ["PretrainingConfig", "augment", "class_fidelity", "pipeline_components",
           "pretrain_generator", "sample_prompts", "vae_reconstruction_error"]
