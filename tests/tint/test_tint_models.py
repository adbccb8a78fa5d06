"""Building and loading SD folders, and the errors for folders that cannot work."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tint_distill.tint import ModelFolderError, TinySDConfig, check_model_folder, load_stable_diffusion


def test_tiny_model_loads_frozen(shared_components):
    c = shared_components
    assert c.resolution == 64 and c.latent_shape == (4, 8, 8)
    assert len(c.tokenizer) == 49408 and c.tokenizer.model_max_length == 77
    assert c.text_encoder.config.vocab_size == 49408
    for module in (c.unet, c.vae, c.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    config = c.scheduler.config
    assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert config.timestep_spacing == "trailing" and not config.set_alpha_to_one and config.steps_offset == 1


def test_latents_are_resolution_over_8(shared_components):
    images = torch.zeros(2, 3, 64, 64)
    with torch.no_grad():
        latents = shared_components.vae.encode(images).latent_dist.mean
    assert latents.shape == (2, 4, 8, 8)


def test_build_is_seeded(tmp_path, shared_components):
    from tint_distill.tint import build_tiny_stable_diffusion

    again = load_stable_diffusion(build_tiny_stable_diffusion(tmp_path / "m", resolution=64, seed=0))
    for a, b in zip(shared_components.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(a, b)


def test_building_leaves_the_callers_random_state_alone():
    from tint_distill.tint.models import build_sd_modules

    config = TinySDConfig(resolution=32, unet_block_out_channels=(32, 32), vae_block_out_channels=(16, 32))
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    first = build_sd_modules(config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(99)  # another caller state: the same weights
    second = build_sd_modules(config, seed=3)
    for name in ("unet", "vae", "text_encoder"):
        for a, b in zip(first[name].state_dict().values(), second[name].state_dict().values()):
            assert torch.equal(a, b)


def test_config_accepts_lists():
    config = TinySDConfig(unet_block_out_channels=[32, 64], vae_block_out_channels=[8, 16, 16, 16])
    assert config.unet_block_out_channels == (32, 64)
    with pytest.raises(ValueError, match="multiple of the VAE scale factor 8"):
        TinySDConfig(resolution=60)


def test_vae_levels_set_the_scale_factor_and_the_latent_size(tmp_path):
    from tint_distill.tint import build_tiny_stable_diffusion

    config = TinySDConfig(resolution=32, vae_block_out_channels=[16, 32, 32])
    assert config.vae_scale_factor == 4
    components = load_stable_diffusion(build_tiny_stable_diffusion(tmp_path / "m", config=config))
    assert components.vae_scale_factor == 4 and components.resolution == 32
    assert components.latent_shape == (4, 8, 8)
    with torch.no_grad():
        latents = components.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
    assert tuple(latents.shape[1:]) == components.latent_shape
    with pytest.raises(ValueError, match="2 to 4 levels"):
        TinySDConfig(vae_block_out_channels=[16])


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist") as info:
        load_stable_diffusion(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)


def test_hub_id_is_refused_with_a_hint():
    with pytest.raises(ModelFolderError, match="Hugging Face Hub id.*offline.*local path"):
        load_stable_diffusion("runwayml/stable-diffusion-v1-5")


def test_incomplete_folder_names_what_is_missing(tmp_path, model_dir):
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / "vae")
    (copy / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelFolderError, match=r"incomplete: missing vae/, scheduler/ \(config"):
        check_model_folder(copy)
    (copy / "model_index.json").unlink()
    with pytest.raises(ModelFolderError, match="model_index.json"):
        load_stable_diffusion(copy)


def test_tiny_tokenizer_is_refused(tmp_path, model_dir):
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    tokenizer_json = copy / "tokenizer" / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    data["model"]["vocab"] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    data["model"]["merges"] = []
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in data["model"]["vocab"]]
    for token in data["added_tokens"]:
        token["id"] = data["model"]["vocab"][token["content"]]
    tokenizer_json.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="tokenizer.*only 2 tokens"):
        load_stable_diffusion(copy)
