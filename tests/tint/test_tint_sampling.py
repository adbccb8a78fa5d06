"""TINT sampling: the blend, reproducibility across batch sizes, and alpha = 0 replicas."""

from __future__ import annotations

import pytest
import torch

from tint_distill.tint import blend_with_noise, reconstruct, sample_class, textual_inversion_sample, tint_sample
from tint_distill.tint.sampling import rms


def test_blend_keeps_the_interpolated_rms():
    generator = torch.Generator().manual_seed(0)
    z_t = 0.4 * torch.randn(3, 4, 8, 8, generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator)
    alpha = torch.tensor([0.0, 0.3, 1.0])
    blended = blend_with_noise(z_t, noise, alpha)
    assert torch.equal(blended[0], z_t[0]) and torch.allclose(blended[2], noise[2], atol=1e-6)
    expected = (1 - alpha) * rms(z_t).flatten() + alpha * rms(noise).flatten()
    assert torch.allclose(rms(blended).flatten(), expected, atol=1e-6)
    direction = 0.7 * z_t[1] + 0.3 * noise[1]
    assert torch.allclose(blended[1] / blended[1].norm(), direction / direction.norm(), atol=1e-6)


def test_alpha_zero_reproduces_the_reconstruction(specialised):
    components, spec = specialised
    config = _nti_config(spec)
    replicas, info = sample_class(components, spec, n_images=4, alpha=0.0, seed=3, batch_size=4,
                                  output_type="float", return_info=True)
    reconstructions = reconstruct(components, spec.inverted_latents, spec.null_embeddings, spec.prompt, config=config)
    chosen = [i["support"] for i in info]
    assert all(i["alpha"] == 0.0 for i in info)
    assert torch.allclose(replicas, reconstructions[chosen], atol=1e-4)


def test_batched_equals_sequential(specialised):
    components, spec = specialised
    kwargs = dict(n_images=5, alpha_mode="random", seed=11, output_type="float", return_info=True)
    one, info_one = sample_class(components, spec, batch_size=1, **kwargs)
    many, info_many = sample_class(components, spec, batch_size=4, **kwargs)
    assert info_one == info_many
    assert len({i["support"] for i in info_one}) > 1 and len({i["alpha"] for i in info_one}) == 5
    assert torch.allclose(one, many, atol=1e-4)
    other = sample_class(components, spec, n_images=5, alpha_mode="random", seed=12, output_type="float")
    assert not torch.allclose(other, one, atol=1e-2)


def test_alpha_moves_away_from_the_support(specialised):
    components, spec = specialised
    reconstructions = reconstruct(components, spec.inverted_latents, spec.null_embeddings, spec.prompt,
                                  config=_nti_config(spec))
    distances = []
    for alpha in (0.0, 0.5, 1.0):
        images, info = sample_class(components, spec, n_images=6, alpha=alpha, seed=5, output_type="float",
                                    return_info=True)
        chosen = reconstructions[[i["support"] for i in info]]
        distances.append(float(((images - chosen) ** 2).mean()))
    assert distances[0] < 1e-6 < distances[1] and distances[1] < distances[2]


def test_output_types_and_sizes(specialised):
    components, spec = specialised
    pil = sample_class(components, spec, n_images=2, output_size=32)
    assert [image.size for image in pil] == [(32, 32), (32, 32)] and pil[0].mode == "RGB"
    raw = sample_class(components, spec, n_images=2, output_type="uint8")
    assert raw.dtype == torch.uint8 and raw.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="alpha"):
        tint_sample(components, spec.inverted_latents, spec.null_embeddings, spec.prompt, n_images=1, alpha=2.0)


def test_textual_inversion_baseline(specialised):
    components, spec = specialised
    one = textual_inversion_sample(components, spec.prompt, n_images=3, num_steps=4, batch_size=1, seed=2,
                                   output_type="float")
    many = textual_inversion_sample(components, spec.prompt, n_images=3, num_steps=4, batch_size=3, seed=2,
                                    output_type="float")
    assert one.shape == (3, 3, 64, 64)
    assert torch.allclose(one, many, atol=1e-4)
    assert not torch.allclose(one[0], one[1], atol=1e-3)


def _nti_config(spec):
    from tint_distill.tint import NullTextConfig

    return NullTextConfig(num_steps=spec.num_steps, guidance_scale=spec.null_text.guidance_scale)
