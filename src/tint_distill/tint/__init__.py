"""TINT core: textual + null-text inversion of Stable Diffusion 1.x, and sampling.

Plain PyTorch/diffusers, no Kedro. Typical use::

    components = load_stable_diffusion("path/to/sd15", device="cuda")
    spec = specialise_class(components, images, token="<class-0>", init_word="dog")
    save_specialisation(spec, "class0.safetensors")
    images = sample_class(components, spec, n_images=100)

The classes of an episode are faster specialised together (one UNet batch per step, each class
with its own random stream, so the same results to rounding)::

    specs = specialise_group(components, [ClassToSpecialise(x, f"<class-{i}>", word) for ...])

``load_stable_diffusion(path, device="cuda", precision="bf16")`` computes in bf16 with float32
master copies of everything that is learned.
"""

from .errors import ModelFolderError, NonFiniteLossError, SpecialisationError, TintError
from .models import (SDComponents, TinySDConfig, build_tiny_stable_diffusion, check_model_folder,
                     load_stable_diffusion)
from .null_text_inversion import (NullTextConfig, NullTextResult, ddim_invert, null_text_invert,
                                  null_text_invert_group, null_text_invert_sequential, reconstruct,
                                  reconstruct_latents)
from .sampling import blend_with_noise, textual_inversion_sample, tint_sample
from .specialisation import (ClassSpecialisation, ClassToSpecialise, apply_specialisation, load_specialisation,
                             read_specialisation_sidecar, sample_class, save_specialisation, specialise_class, specialise_group)
from .textual_inversion import (TextualInversionConfig, add_class_token, train_textual_inversion,
                                train_textual_inversion_group)
from .tokenizer import write_clip_tokenizer_files

__all__ = [
    "ClassSpecialisation", "ClassToSpecialise", "ModelFolderError", "NonFiniteLossError", "NullTextConfig",
    "NullTextResult", "SDComponents", "SpecialisationError", "TextualInversionConfig", "TinySDConfig", "TintError",
    "add_class_token", "apply_specialisation", "blend_with_noise", "build_tiny_stable_diffusion",
    "check_model_folder", "ddim_invert", "load_specialisation", "load_stable_diffusion", "null_text_invert",
    "null_text_invert_group", "null_text_invert_sequential", "reconstruct", "reconstruct_latents", "read_specialisation_sidecar", "sample_class",
    "save_specialisation", "specialise_class", "specialise_group", "textual_inversion_sample", "tint_sample", "train_textual_inversion",
    "train_textual_inversion_group", "write_clip_tokenizer_files",
]
