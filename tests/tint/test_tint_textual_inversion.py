"""Textual inversion changes exactly one embedding row."""

from __future__ import annotations

import pytest
import torch

from tint_distill.tint import NonFiniteLossError, TextualInversionConfig, add_class_token, train_textual_inversion

CONFIG = TextualInversionConfig(num_steps=6, learning_rate=5e-3, seed=1, prompt_template="A photo of an {token}")


def _weight(components) -> torch.Tensor:
    return components.text_encoder.get_input_embeddings().weight


def test_token_initialisation(components):
    dog = components.tokenizer.encode("dog", add_special_tokens=False)[0]
    obj = components.tokenizer.encode("object", add_special_tokens=False)[0]
    first = add_class_token(components, "<c0>", "dog")
    second = add_class_token(components, "<c1>", "golden retriever")  # two tokens: fallback word
    assert (first, second) == (49408, 49409) and len(components.tokenizer) == 49410
    assert torch.equal(_weight(components)[first], _weight(components)[dog])
    assert torch.equal(_weight(components)[second], _weight(components)[obj])
    assert add_class_token(components, "<c0>", "object") == first  # already there: same id, re-initialised
    assert torch.equal(_weight(components)[first], _weight(components)[obj])
    assert components.tokenizer("A photo of an <c1>").input_ids[-2] == second
    with pytest.raises(ValueError, match="base vocabulary"):
        add_class_token(components, "dog", "dog")


def test_only_the_new_row_changes(components, supports):
    token_id = add_class_token(components, "<c0>", "fish")
    before = _weight(components).detach().clone()
    losses: list[float] = []
    learned = train_textual_inversion(components, supports, "<c0>", config=CONFIG, losses=losses)
    after = _weight(components)
    assert len(losses) == CONFIG.num_steps and all(torch.isfinite(torch.tensor(losses)))
    assert torch.equal(after[:token_id], before[:token_id])  # bit for bit
    assert torch.equal(after[token_id + 1:], before[token_id + 1:])
    assert not torch.equal(after[token_id], before[token_id])
    assert torch.equal(learned, after[token_id])
    assert not after.requires_grad and after.grad is None
    assert not any(p.requires_grad for p in components.unet.parameters())


def test_seeded(model_dir, supports):
    from tint_distill.tint import load_stable_diffusion

    results = []
    for _ in range(2):
        c = load_stable_diffusion(model_dir)
        add_class_token(c, "<c0>", "fish")
        results.append(train_textual_inversion(c, supports, "<c0>", config=TextualInversionConfig(
            num_steps=3, learning_rate=1e-3, prompt_template="A photo of an {token}")))
    assert torch.equal(results[0], results[1])


def test_non_finite_loss_is_reported(components, supports):
    token_id = add_class_token(components, "<c0>", "fish")
    before = _weight(components).detach().clone()
    bad = TextualInversionConfig(num_steps=5, learning_rate=float("inf"), prompt_template="A photo of an {token}")
    with pytest.raises(NonFiniteLossError, match="textual inversion.*step 2") as info:
        train_textual_inversion(components, supports, "<c0>", config=bad)
    assert (info.value.stage, info.value.step) == ("textual_inversion", 2)
    assert torch.equal(_weight(components), before)  # the row is reset


def test_bad_inputs(components, supports):
    with pytest.raises(ValueError, match="add_class_token"):
        train_textual_inversion(components, supports, "<never-added>", config=CONFIG)
    add_class_token(components, "<c0>", "fish")
    poisoned = supports.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_textual_inversion(components, poisoned, "<c0>", config=CONFIG)
    with pytest.raises(ValueError, match="64x64"):
        train_textual_inversion(components, supports[:, :, :32, :32], "<c0>", config=CONFIG)
