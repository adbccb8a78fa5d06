"""The grouped engine: classes specialised together get what they would get alone, and a class
that diverges costs the others nothing."""

from __future__ import annotations

import pytest
import torch

from tint_distill.tint import (
    NonFiniteLossError,
    NullTextConfig,
    TextualInversionConfig,
    add_class_token,
    load_stable_diffusion,
    null_text_invert,
    null_text_invert_group,
    train_textual_inversion,
    train_textual_inversion_group,
)

CONFIG = TextualInversionConfig(num_steps=8, learning_rate=5e-3, batch_size=2, seed=3, log_every=3,
                                prompt_template="A photo of an {token}")
TOKENS = ["<fish>", "<clock>", "<fish2>"]


def _fresh(model_dir, tokens=TOKENS):
    components = load_stable_diffusion(model_dir)
    for token, word in zip(tokens, ["fish", "clock", "fish"]):
        add_class_token(components, token, word)
    return components


def _alone(model_dir, images, token, config=CONFIG):
    components = _fresh(model_dir)
    losses: list[float] = []
    return train_textual_inversion(components, images, token, config=config, losses=losses), losses


def test_grouped_textual_inversion_equals_one_class_at_a_time(model_dir, group_images):
    components = _fresh(model_dir)
    weight = components.text_encoder.get_input_embeddings().weight
    before = weight.detach().clone()
    losses: list[list[float]] = [[] for _ in TOKENS]
    grouped = train_textual_inversion_group(components, group_images, TOKENS, config=CONFIG, losses=losses)
    ids = [components.tokenizer.convert_tokens_to_ids(t) for t in TOKENS]
    for g, token in enumerate(TOKENS):
        alone, alone_losses = _alone(model_dir, group_images[g], token)
        assert torch.allclose(grouped[g], alone, atol=1e-5, rtol=0), token
        assert not torch.equal(grouped[g], before[ids[g]])  # it did learn
        assert torch.allclose(torch.tensor(losses[g]), torch.tensor(alone_losses), rtol=1e-4)
        assert torch.equal(weight[ids[g]], grouped[g])  # installed
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[ids] = False
    assert torch.equal(weight[others], before[others])  # every other row bit for bit


def _poison_unet(components, sample_rows: slice, at_call: int):
    """Fault injection: UNet call number ``at_call`` gets NaN inputs for the samples ``sample_rows``,
    so the NaN runs through the whole forward and backward pass of those samples."""
    calls = {"n": 0}

    def hook(module, args):
        calls["n"] += 1
        if calls["n"] == at_call:
            sample = args[0].clone()
            sample[sample_rows] = float("nan")
            return (sample, *args[1:])
        return None

    return components.unet.register_forward_pre_hook(hook)


def test_a_diverging_class_fails_alone_and_the_others_finish_unchanged(model_dir, group_images):
    components = _fresh(model_dir)
    clock_id = components.tokenizer.convert_tokens_to_ids("<clock>")
    clock_before = components.text_encoder.get_input_embeddings().weight[clock_id].detach().clone()
    handle = _poison_unet(components, slice(2, 4), at_call=3)  # the clock's 2 samples, at step 3
    try:
        results = train_textual_inversion_group(components, group_images, TOKENS, config=CONFIG)
    finally:
        handle.remove()
    error = results[1]
    assert isinstance(error, NonFiniteLossError) and error.step == 3 and "<clock>" in str(error)
    assert torch.equal(components.text_encoder.get_input_embeddings().weight[clock_id], clock_before)
    for g in (0, 2):
        alone, _ = _alone(model_dir, group_images[g], TOKENS[g])
        assert torch.allclose(results[g], alone, atol=1e-5, rtol=0)


NTI = NullTextConfig(num_steps=3, inner_steps=4)
PROMPTS = ["a drawing of a fish", "a drawing of a clock", "a drawing of a fish"]


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_grouped_null_text_inversion_equals_one_class_at_a_time(model_dir, group_images):
    """In float64 the two paths agree to rounding; chunks may cut through a class."""
    components = load_stable_diffusion(model_dir, dtype=torch.float64)
    images = [x.double() for x in group_images]
    for chunk in (None, 2):
        grouped = null_text_invert_group(components, images, PROMPTS, config=NTI, chunk=chunk)
        for g, (x, prompt) in enumerate(zip(images, PROMPTS)):
            alone = null_text_invert(components, x, prompt, config=NTI)
            assert torch.equal(grouped[g].inner_steps, alone.inner_steps)
            assert torch.allclose(grouped[g].null_embeddings, alone.null_embeddings, atol=1e-6, rtol=0)
            assert torch.allclose(grouped[g].inverted_latents, alone.inverted_latents, atol=1e-9, rtol=0)


def test_a_support_that_diverges_fails_its_class_only(model_dir, group_images):
    components = load_stable_diffusion(model_dir, dtype=torch.float64)
    images = [x.double() for x in group_images]
    # supports are ordered fish (3), clock (2), fish2 (3): rows 3-4 are the clock's. The DDIM
    # inversion makes 3 UNet calls, the first guided step one more: poison the optimisation.
    handle = _poison_unet(components, slice(3, 5), at_call=6)
    try:
        results = null_text_invert_group(components, images, PROMPTS, config=NTI,
                                         support_ids=[["f1", "f2", "f3"], ["clock/a.png", "clock/b.png"], ["x", "y", "z"]])
    finally:
        handle.remove()
    assert isinstance(results[1], NonFiniteLossError)
    assert (results[1].step, results[1].inner_step) == (1, 2) and "support clock/a.png" in str(results[1])
    for g in (0, 2):
        alone = null_text_invert(components, images[g], PROMPTS[g], config=NTI)
        assert torch.allclose(results[g].null_embeddings, alone.null_embeddings, atol=1e-6, rtol=0)


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_in_fp16_a_diverging_class_costs_the_others_no_step(model_dir, group_images):
    """fp16 scales the loss and skips a step whose gradients overflow: a failed class's NaN
    gradient must not make the others skip theirs."""
    learned = {}
    for poisoned in (False, True):
        components = _fresh(model_dir).set_precision("fp16")
        handle = _poison_unet(components, slice(2, 4), at_call=3) if poisoned else None
        try:
            learned[poisoned] = train_textual_inversion_group(components, group_images, TOKENS, config=CONFIG)
        finally:
            if handle is not None:
                handle.remove()
    assert isinstance(learned[True][1], NonFiniteLossError)
    for g in (0, 2):
        assert torch.equal(learned[True][g], learned[False][g])


def test_bf16_runs_on_the_cpu_close_to_fp32(model_dir, group_images):
    """Autocast bf16 with float32 master copies: the same optimisation, rounded coarser."""
    learned = {}
    for precision in ("fp32", "bf16"):
        components = _fresh(model_dir).set_precision(precision)
        assert components.precision == precision
        learned[precision] = train_textual_inversion_group(components, group_images[:2], TOKENS[:2], config=CONFIG)
    initial = _fresh(model_dir).text_encoder.get_input_embeddings().weight
    for g, token in enumerate(TOKENS[:2]):
        start = initial[_fresh(model_dir).tokenizer.convert_tokens_to_ids(token)]
        step32, step16 = learned["fp32"][g] - start, learned["bf16"][g] - start
        assert learned["bf16"][g].dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(step32, step16, dim=0) > 0.9
    with pytest.raises(ValueError, match="precision must be one of"):
        _fresh(model_dir).set_precision("fp8")


def test_group_inputs_are_checked(model_dir, group_images):
    components = _fresh(model_dir)
    with pytest.raises(ValueError, match="one image batch per token"):
        train_textual_inversion_group(components, group_images[:2], TOKENS, config=CONFIG)
    with pytest.raises(ValueError, match="must differ"):
        train_textual_inversion_group(components, group_images[:2], ["<fish>", "<fish>"], config=CONFIG)
    with pytest.raises(ValueError, match="add_class_token"):
        train_textual_inversion_group(components, group_images[:2], ["<fish>", "<never>"], config=CONFIG)
