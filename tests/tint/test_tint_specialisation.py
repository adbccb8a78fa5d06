"""Saving, loading and re-applying a class specialisation (no pickle)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tint_distill.tint import (SpecialisationError, apply_specialisation, load_specialisation,
                               load_stable_diffusion, sample_class, save_specialisation)


def test_specialisation_contents(specialised):
    components, spec = specialised
    assert spec.token == "<fish>" and spec.prompt == "A photo of an <fish>"
    assert spec.token_embedding.shape == (32,)
    assert spec.inverted_latents.shape == (3, 4, 8, 8)
    assert spec.null_embeddings.shape == (3, spec.num_steps, 77, 32)
    diagnostics = spec.diagnostics
    assert diagnostics["timesteps"] == sorted(diagnostics["timesteps"], reverse=True)
    assert len(diagnostics["timesteps"]) == spec.num_steps and diagnostics["timesteps"][0] == 999
    assert spec.textual_inversion.num_steps == 15 and spec.null_text.guidance_scale == 7.5
    assert diagnostics["resolution"] == 64 and diagnostics["embedding_change_norm"] > 0
    json.dumps(diagnostics)
    measured = spec.reconstruction  # the supports rebuilt from the inversion against the VAE round trip
    assert len(measured["mse_per_support"]) == len(measured["vae_mse_per_support"]) == 3
    assert measured["ratio"] == pytest.approx(measured["mse"] / measured["vae_mse"])
    assert measured["mse"] == pytest.approx(sum(measured["mse_per_support"]) / 3)
    assert spec.reconstructed_latents.shape == spec.inverted_latents.shape
    token_id = components.tokenizer.convert_tokens_to_ids("<fish>")
    assert torch.equal(components.text_encoder.get_input_embeddings().weight[token_id], spec.token_embedding)


def test_save_load_gives_identical_samples_in_fresh_components(specialised, model_dir, tmp_path):
    components, spec = specialised
    path = save_specialisation(spec, tmp_path / "episode_0000" / "fish.safetensors")
    assert path.is_file() and path.with_suffix(".json").is_file()
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == ["inverted_latents", "null_embeddings", "reconstructed_latents",
                                         "token_embedding"]
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["support_ids"] == ["a.png", "b.png", "c.png"] and sidecar["token"] == "<fish>"

    loaded = load_specialisation(path)
    for name in ("token_embedding", "inverted_latents", "null_embeddings", "reconstructed_latents"):
        assert torch.equal(getattr(loaded, name), getattr(spec, name))
    assert loaded.support_ids == spec.support_ids and loaded.diagnostics == spec.diagnostics
    assert loaded.textual_inversion == spec.textual_inversion and loaded.null_text == spec.null_text

    fresh = load_stable_diffusion(model_dir)
    with pytest.raises(SpecialisationError, match="apply_specialisation"):
        sample_class(fresh, loaded, n_images=1)
    apply_specialisation(fresh, loaded)
    other = type(loaded)(**{**loaded.__dict__, "token_embedding": loaded.token_embedding + 1})
    with pytest.raises(SpecialisationError, match="another embedding"):
        sample_class(fresh, other, n_images=1)
    expected = sample_class(components, spec, n_images=3, alpha=0.5, seed=4, output_type="float")
    again = sample_class(fresh, loaded, n_images=3, alpha=0.5, seed=4, output_type="float")
    assert torch.equal(expected, again)


def test_load_errors(specialised, tmp_path):
    _, spec = specialised
    with pytest.raises(SpecialisationError, match="missing"):
        load_specialisation(tmp_path / "absent.safetensors")
    path = save_specialisation(spec, tmp_path / "x.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(SpecialisationError, match=r"x\.json is missing"):
        load_specialisation(path)
    with pytest.raises(ValueError, match=".safetensors"):
        save_specialisation(spec, tmp_path / "x.pt")


def test_applying_to_another_model_is_refused(specialised, tmp_path):
    from tint_distill.tint import TinySDConfig, build_tiny_stable_diffusion

    _, spec = specialised
    wider = TinySDConfig(cross_attention_dim=64, text_hidden_size=64, text_intermediate_size=64)
    other = load_stable_diffusion(build_tiny_stable_diffusion(tmp_path / "wide", config=wider))
    with pytest.raises(SpecialisationError, match="another model"):
        apply_specialisation(other, spec)


def test_a_specialisation_saved_in_the_free_form_layout_loads_typed(specialised, tmp_path):
    """Format 2 (before the settings were typed) kept one free-form ``settings`` block: finished work
    saved then still loads, with its settings typed and the rest as diagnostics."""
    _, spec = specialised
    path = save_specialisation(spec, tmp_path / "fish.safetensors")
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    legacy = {"format_version": 2, **{k: sidecar[k] for k in ("token", "init_word", "support_ids", "tensors")},
              "settings": {"num_steps": spec.null_text.num_steps, "guidance_scale": 3.5, "timestep_spacing": "leading",
                           "prompt_template": "x {token}", "textual_inversion": sidecar["textual_inversion"],
                           "null_text": {**sidecar["null_text"], "guidance_scale": 3.5, "timestep_spacing": "leading"},
                           **sidecar["diagnostics"]}}
    path.with_suffix(".json").write_text(json.dumps(legacy), encoding="utf-8")
    loaded = load_specialisation(path)
    assert loaded.null_text.guidance_scale == 3.5 and loaded.null_text.timestep_spacing == "leading"
    assert loaded.textual_inversion == spec.textual_inversion and loaded.diagnostics == spec.diagnostics
