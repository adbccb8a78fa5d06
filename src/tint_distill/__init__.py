"""tint_distill: few-shot distillation with TINT (textual + null-text inversion)."""

__version__ = "0.1.0"
