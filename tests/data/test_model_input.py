"""The one image policy: every model sees a drawing padded to a square on white, not stretched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tint_distill.data.model_input import images_to_tensor, square_image
from tint_distill.distill.teacher import FeatureBackbone
from tint_distill.tint.imaging import to_model_tensor

FISH = Path(__file__).resolve().parents[2] / "data/01_raw/openclipart/fish/clown_loach_01.png"  # 128 x 49 px


def _content_box(batch: torch.Tensor) -> tuple[int, int]:
    """Height and width of the non-white part of one [3, S, S] image in [0, 1]."""
    ink = (batch < 0.9).any(0).numpy()
    rows, cols = np.nonzero(ink.any(1))[0], np.nonzero(ink.any(0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_a_wide_drawing_keeps_its_proportions_on_a_white_square():
    fish = Image.open(FISH)
    assert fish.size == (128, 49)
    square = square_image(fish)
    assert square.size == (128, 128)
    array = np.asarray(square)
    assert (array[:39] == 255).all() and (array[-40:] == 255).all()  # white bands above and below, centred
    batch = images_to_tensor([fish], 64)[0]
    height, width = _content_box(batch)
    original_height, original_width = _content_box(images_to_tensor([fish.crop((0, 0, 128, 49))], 128)[0][:, :49])
    assert height / width == pytest.approx(original_height / original_width, rel=0.15)
    assert height < 0.5 * 64  # stretched to the square it would fill the height


def test_transparent_pixels_and_padding_are_the_same_white():
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (10, 5, 30, 15))
    batch = images_to_tensor([rgba], 40)[0]
    assert torch.equal(batch[:, :10], torch.ones(3, 10, 40))  # padding
    assert torch.equal(batch[:, 10:15], torch.ones(3, 5, 40))  # transparent, flattened on white
    assert batch[0, 20, 20] == pytest.approx(200 / 255) and batch[1, 20, 20] == 0


def test_tensor_batches_follow_the_same_policy_as_pictures():
    fish = Image.open(FISH)
    as_tensor = torch.from_numpy(np.array(fish.convert("RGB"))).permute(2, 0, 1)
    assert torch.allclose(images_to_tensor(as_tensor.unsqueeze(0), 32), images_to_tensor([fish], 32), atol=1e-5)


def test_generator_inversion_and_classifiers_see_the_same_pixels():
    fish = Image.open(FISH)
    policy = images_to_tensor([fish], 32)
    assert torch.allclose((to_model_tensor([fish], 32) + 1) / 2, policy, atol=1e-6)
    teacher = FeatureBackbone(torch.nn.Identity(), "identity", 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 3)
    assert torch.equal(teacher.preprocess([fish]), policy)  # the teacher's input, before its normalisation


def test_the_diffusion_models_input_has_known_pixel_values():
    """A hand-made 4 x 2 picture, padded to 4 x 4 on white (no resize), in [-1, 1]: 0 -> -1, 255 -> 1,
    51 -> 51 / 255 * 2 - 1 = -0.6; a transparent pixel is white."""
    picture = Image.new("RGBA", (4, 2), (255, 255, 255, 255))
    for x, colour in enumerate([(255, 0, 0, 255), (0, 0, 0, 255), (51, 102, 204, 255), (9, 9, 9, 0)]):
        picture.putpixel((x, 0), colour)
    tensor = to_model_tensor([picture], 4)
    assert tensor.shape == (1, 3, 4, 4) and tensor.dtype == torch.float32
    image = tensor[0]
    assert torch.equal(image[:, 0], torch.ones(3, 4)) and torch.equal(image[:, 3], torch.ones(3, 4)), "white bands"
    assert torch.equal(image[:, 2], torch.ones(3, 4)), "the picture's white second row"
    expected_row = torch.tensor([[1.0, -1.0, 51 / 255 * 2 - 1, 1.0],
                                 [-1.0, -1.0, 102 / 255 * 2 - 1, 1.0],
                                 [-1.0, -1.0, 204 / 255 * 2 - 1, 1.0]])
    assert torch.allclose(image[:, 1], expected_row, atol=1e-6)
    # resized: a flat colour stays that colour at any size
    flat = to_model_tensor([Image.new("RGB", (3, 3), (51, 102, 204))], 8)[0]
    assert torch.allclose(flat, torch.tensor([-0.6, -0.2, 0.6]).view(3, 1, 1).expand(3, 8, 8), atol=1e-6)
