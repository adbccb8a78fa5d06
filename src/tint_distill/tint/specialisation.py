"""A class specialisation: everything TINT learns for one class, saved without pickle.

``save_specialisation(spec, "x.safetensors")`` writes the tensors to ``x.safetensors`` and
everything else (token, support ids, settings) to the sidecar ``x.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import NonFiniteLossError, SpecialisationError
from .diffusion import decode_latents, encode_images
from .models import SDComponents, json_safe
from .null_text_inversion import NullTextConfig, null_text_invert_group
from .progress import Progress
from .sampling import OutputType, tint_sample
from .textual_inversion import (TextualInversionConfig, add_class_token, set_token_embedding,
                                train_textual_inversion_group)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: the reconstructed latents and the reconstruction errors; 3: typed settings and diagnostics
# Bumped whenever a change to textual or null-text inversion alters what a specialisation holds:
# cached specialisations carry it in their fingerprints and are recomputed after such a change.
SPECIALISATION_VERSION = 2
_TENSORS = ("token_embedding", "inverted_latents", "null_embeddings")
_OPTIONAL_TENSORS = ("reconstructed_latents",)


@dataclass
class ClassSpecialisation:
    """TINT's result for one class: the TI token and, per support, zT and S null embeddings."""

    token: str
    init_word: str
    token_embedding: torch.Tensor  # (D,)
    inverted_latents: torch.Tensor  # (K, C, h, w)
    null_embeddings: torch.Tensor  # (K, S, L, D)
    support_ids: list[str]
    textual_inversion: TextualInversionConfig = field(default_factory=TextualInversionConfig)
    null_text: NullTextConfig = field(default_factory=NullTextConfig)  # what sampling must replay
    diagnostics: dict[str, Any] = field(default_factory=dict)  # losses, reconstruction, timings, model, where
    reconstructed_latents: torch.Tensor | None = None  # (K, C, h, w): the supports as the inversion rebuilds them

    def __post_init__(self) -> None:
        k = self.inverted_latents.shape[0]
        if self.reconstructed_latents is not None and self.reconstructed_latents.shape != self.inverted_latents.shape:
            raise SpecialisationError(f"reconstructed latents {tuple(self.reconstructed_latents.shape)} do not match "
                                      f"the inverted latents {tuple(self.inverted_latents.shape)}")
        if self.token_embedding.dim() != 1 or self.inverted_latents.dim() != 4 or self.null_embeddings.dim() != 4:
            raise SpecialisationError("expected token_embedding (D,), inverted_latents (K, C, h, w) and "
                                      "null_embeddings (K, S, L, D)")
        if self.null_embeddings.shape[0] != k or len(self.support_ids) != k:
            raise SpecialisationError(f"{k} inverted latents, {self.null_embeddings.shape[0]} null-embedding "
                                      f"sets and {len(self.support_ids)} support ids do not match")
        if self.null_embeddings.shape[-1] != self.token_embedding.shape[0]:
            raise SpecialisationError("token and null embeddings have different widths")

    @property
    def prompt(self) -> str:
        """The textual-inversion prompt, e.g. "A photo of an <class-3>"."""
        return self.textual_inversion.prompt_template.format(token=self.token)

    @property
    def num_steps(self) -> int:
        return int(self.null_embeddings.shape[1])

    @property
    def reconstruction(self) -> dict[str, Any] | None:
        """How well the inversion holds the supports (:func:`reconstruction_errors`); None for a
        specialisation saved before it was measured."""
        return self.diagnostics.get("reconstruction")


def save_specialisation(spec: ClassSpecialisation, path: str | Path) -> Path:
    """Write the tensors to ``path`` (.safetensors) and the rest to ``path.with_suffix('.json')``."""
    from tint_distill.tensor_files import save_tensors

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"the specialisation file must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(spec, name).detach().float().cpu().contiguous() for name in _TENSORS + _OPTIONAL_TENSORS
               if getattr(spec, name) is not None}
    save_tensors(tensors, path, metadata={"format": "tint-class-specialisation", "version": str(FORMAT_VERSION)})
    sidecar = {
        "format_version": FORMAT_VERSION,
        "token": spec.token,
        "init_word": spec.init_word,
        "support_ids": list(spec.support_ids),
        "tensors": {name: list(t.shape) for name, t in tensors.items()},
        "textual_inversion": dataclasses.asdict(spec.textual_inversion),
        "null_text": dataclasses.asdict(spec.null_text),
        "diagnostics": json_safe(spec.diagnostics),
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    return path


def read_specialisation_sidecar(path: str | Path) -> dict[str, Any]:
    """What a specialisation's JSON sidecar holds, without reading its tensors: ``token``,
    ``init_word``, ``support_ids``, ``textual_inversion``, ``null_text`` (settings as saved) and
    ``diagnostics`` (losses, reconstruction, timings), in the current format whatever it was saved in."""
    sidecar_path = Path(path).with_suffix(".json")
    if not sidecar_path.is_file():
        raise SpecialisationError(f"specialisation file {sidecar_path} is missing (need both .safetensors and .json)")
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    if sidecar.get("format_version") not in (1, 2, FORMAT_VERSION):  # 1: without reconstructions
        raise SpecialisationError(f"{sidecar_path}: unsupported format_version {sidecar.get('format_version')}")
    if "settings" in sidecar:  # formats 1 and 2: one free-form block
        diagnostics = dict(sidecar["settings"])
        ti, nti = diagnostics.pop("textual_inversion", {}), diagnostics.pop("null_text", {})
        for legacy in ("num_steps", "guidance_scale", "timestep_spacing", "prompt_template"):
            diagnostics.pop(legacy, None)  # copies of the null-text and textual-inversion settings
    else:
        ti, nti, diagnostics = sidecar["textual_inversion"], sidecar["null_text"], sidecar["diagnostics"]
    return {"token": sidecar["token"], "init_word": sidecar["init_word"], "support_ids": list(sidecar["support_ids"]),
            "textual_inversion": ti, "null_text": nti, "diagnostics": diagnostics}


def load_specialisation(path: str | Path) -> ClassSpecialisation:
    """Read a specialisation written by :func:`save_specialisation`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SpecialisationError(f"specialisation file {path} is missing (need both .safetensors and .json)")
    sidecar = read_specialisation_sidecar(path)
    tensors = load_file(str(path))
    missing = [name for name in _TENSORS if name not in tensors]
    if missing:
        raise SpecialisationError(f"{path} lacks tensors {missing}")
    return ClassSpecialisation(token=sidecar["token"], init_word=sidecar["init_word"],
                               support_ids=sidecar["support_ids"],
                               textual_inversion=_config(TextualInversionConfig, sidecar["textual_inversion"]),
                               null_text=_config(NullTextConfig, sidecar["null_text"]),
                               diagnostics=sidecar["diagnostics"],
                               **{name: tensors[name] for name in _TENSORS},
                               reconstructed_latents=tensors.get("reconstructed_latents"))


def _config(cls: type, saved: dict) -> Any:
    """A saved settings block as its class (settings added since it was saved take their defaults)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in known})


def apply_specialisation(components: SDComponents, spec: ClassSpecialisation) -> int:
    """Install the specialisation's token and learned embedding into the tokenizer/text encoder."""
    width = components.text_encoder.get_input_embeddings().weight.shape[1]
    if spec.token_embedding.shape[0] != width:
        raise SpecialisationError(f"specialisation embeddings are {spec.token_embedding.shape[0]}-d, the model's "
                                  f"text encoder is {width}-d: it was made with another model")
    if tuple(spec.inverted_latents.shape[1:]) != components.latent_shape:
        raise SpecialisationError(f"specialisation latents {tuple(spec.inverted_latents.shape[1:])} do not fit the "
                                  f"model's {components.latent_shape}")
    token_id = add_class_token(components, spec.token, spec.init_word)
    set_token_embedding(components, token_id, spec.token_embedding)
    return token_id


@dataclass(frozen=True)
class ClassToSpecialise:
    """One class's input to :func:`specialise_group`: its supports (K, 3, R, R) in [-1, 1] at the
    model resolution, its new token, and the word its token's embedding starts from."""

    images: torch.Tensor
    token: str
    init_word: str
    support_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ids = tuple(str(s) for s in self.support_ids) or tuple(str(i) for i in range(self.images.shape[0]))
        if len(ids) != self.images.shape[0]:
            raise ValueError(f"{len(ids)} support ids for {self.images.shape[0]} images of {self.token}")
        object.__setattr__(self, "support_ids", ids)


def reconstruction_errors(components: SDComponents, images: torch.Tensor,
                          reconstructed_latents: torch.Tensor) -> dict[str, Any]:
    """Pixel MSE (images in [-1, 1]) of each support's reconstruction from its inversion, beside
    the VAE round trip's (encode, decode: the best any inversion in this latent space can do).

    ``ratio`` is the mean reconstruction MSE over the mean VAE MSE: 1 is a perfect inversion;
    the null-text inversion of Mokady et al. stays close to 1, plain DDIM inversion at CFG 7.5
    does not.
    """
    with torch.no_grad():
        target = images.float()
        round_trip = decode_latents(components, encode_images(components, images)).cpu()
        rebuilt = decode_latents(components, reconstructed_latents.to(components.device)).cpu()
    vae = ((round_trip - target) ** 2).flatten(1).mean(1)
    inversion = ((rebuilt - target) ** 2).flatten(1).mean(1)
    return {
        "mse": float(inversion.mean()),
        "vae_mse": float(vae.mean()),
        "ratio": float(inversion.mean() / vae.mean().clamp_min(1e-12)),
        "mse_per_support": [float(v) for v in inversion],
        "vae_mse_per_support": [float(v) for v in vae],
    }


def specialise_group(components: SDComponents, classes: Sequence[ClassToSpecialise], *,
                     ti_config: TextualInversionConfig = TextualInversionConfig(),
                     nti_config: NullTextConfig = NullTextConfig(), fallback_word: str = "object",
                     progress: Progress = None) -> list[ClassSpecialisation | NonFiniteLossError]:
    """Specialise several classes together: grouped textual inversion (one UNet batch per step
    holding every class), then null-text inversion of all their supports together (in UNet batches
    of ``nti_config.batch_size`` supports, or all at once).

    Each class gets what it would get specialised alone (to rounding). Returns, per class, its
    :class:`ClassSpecialisation`, or the :class:`NonFiniteLossError` that stopped it; a failing
    class costs the others nothing.
    """
    if not classes:
        raise ValueError("specialise_group needs at least one class")
    started = time.perf_counter()
    initial = []
    for item in classes:
        token_id = add_class_token(components, item.token, item.init_word, fallback_word)
        initial.append(components.text_encoder.get_input_embeddings().weight[token_id].detach().float().cpu().clone())
    losses: list[list[float]] = [[] for _ in classes]
    learned = train_textual_inversion_group(components, [c.images for c in classes], [c.token for c in classes],
                                            config=ti_config, progress=progress, losses=losses)
    ti_seconds = time.perf_counter() - started
    trained = [g for g, result in enumerate(learned) if not isinstance(result, NonFiniteLossError)]
    inverted = {}
    if trained:
        results = null_text_invert_group(
            components, [classes[g].images for g in trained],
            [ti_config.prompt_template.format(token=classes[g].token) for g in trained],
            config=nti_config, progress=progress, support_ids=[classes[g].support_ids for g in trained])
        inverted = dict(zip(trained, results))
    seconds = {"textual_inversion": ti_seconds, "null_text": time.perf_counter() - started - ti_seconds}
    out: list[ClassSpecialisation | NonFiniteLossError] = []
    for g, item in enumerate(classes):
        result = inverted.get(g, learned[g])
        if isinstance(result, NonFiniteLossError):
            out.append(result)
            continue
        embedding, tail = learned[g], losses[g][-min(len(losses[g]), 100):]
        reconstruction = reconstruction_errors(components, item.images, result.reconstructed_latents)
        diagnostics = {
            "model_path": components.path,
            "resolution": components.resolution,
            "timesteps": list(result.timesteps),
            "seeds": {"textual_inversion": ti_config.seed},
            "losses": {
                "textual_inversion_first": losses[g][0],
                "textual_inversion_last100_mean": sum(tail) / len(tail),
                "null_text_final_mse_mean": float(result.final_mse.mean()),
                "null_text_final_mse_max": float(result.final_mse.max()),
                "null_text_inner_steps_mean": float(result.inner_steps.float().mean()),
            },
            "reconstruction": reconstruction,
            "seconds": seconds,  # of the whole group
            "group_size": len(classes),
            "dtype": str(components.dtype),
            "precision": components.precision,
            "fallback_word": fallback_word,
            "embedding_change_norm": float((embedding - initial[g]).norm()),
        }
        out.append(ClassSpecialisation(token=item.token, init_word=item.init_word, token_embedding=embedding,
                                       inverted_latents=result.inverted_latents,
                                       null_embeddings=result.null_embeddings, support_ids=list(item.support_ids),
                                       textual_inversion=ti_config, null_text=nti_config,
                                       diagnostics=json_safe(diagnostics),
                                       reconstructed_latents=result.reconstructed_latents))
    return out


def specialise_class(components: SDComponents, images: torch.Tensor, *, token: str, init_word: str,
                     ti_config: TextualInversionConfig = TextualInversionConfig(),
                     nti_config: NullTextConfig = NullTextConfig(), support_ids: Sequence[str] | None = None,
                     fallback_word: str = "object", progress: Progress = None) -> ClassSpecialisation:
    """Textual inversion on all supports, then batched null-text inversion of each support.

    ``images`` is (K, 3, R, R) in [-1, 1] at the model resolution; the token's embedding starts
    from ``init_word`` if it is one known token, else from ``fallback_word``. Raises
    :class:`NonFiniteLossError` when an optimisation diverges.
    """
    (result,) = specialise_group(
        components, [ClassToSpecialise(images, token, init_word, tuple(support_ids or ()))],
        ti_config=ti_config, nti_config=nti_config, fallback_word=fallback_word, progress=progress)
    if isinstance(result, NonFiniteLossError):
        raise result
    return result


def sample_class(components: SDComponents, spec: ClassSpecialisation, *, n_images: int, alpha: float = 1.0,
                 alpha_mode: str = "fixed", seed: int = 0, batch_size: int = 16,
                 guidance_scale: float | None = None, output_size: int | Sequence[int] | None = None,
                 output_type: OutputType = "pil", return_info: bool = False, progress: Progress = None):
    """TINT sampling with a specialisation's prompt, spacing and (by default) guidance scale.

    The specialisation must have been applied to ``components`` (:func:`apply_specialisation`).
    """
    if spec.token not in components.tokenizer.get_vocab():
        raise SpecialisationError(f"token {spec.token!r} is not installed: call apply_specialisation first")
    installed = components.text_encoder.get_input_embeddings().weight[
        components.tokenizer.convert_tokens_to_ids(spec.token)].detach().float().cpu()
    if not torch.equal(installed, spec.token_embedding.float().cpu()):
        raise SpecialisationError(f"token {spec.token!r} holds another embedding (another class or episode): "
                                  "call apply_specialisation(components, spec) first")
    if guidance_scale is None:
        guidance_scale = spec.null_text.guidance_scale
    return tint_sample(
        components, spec.inverted_latents, spec.null_embeddings, spec.prompt, n_images=n_images, alpha=alpha,
        alpha_mode=alpha_mode, seed=seed, batch_size=batch_size, guidance_scale=guidance_scale,
        timestep_spacing=spec.null_text.timestep_spacing, output_size=output_size,
        output_type=output_type, return_info=return_info, progress=progress)
