"""Textual inversion (Gal et al. 2022): learn one new token embedding from a few images.

Only the new token's row of the text encoder's embedding matrix changes: the whole matrix
is handed to AdamW (as in the diffusers example) and every other row is copied back from
the original after each step, so they stay bit-for-bit identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .diffusion import encode_images, tokenize
from .errors import NonFiniteLossError
from .models import SDComponents
from .progress import Progress, Reporter

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_TEMPLATE = "A photo of an {token}"


@dataclass(frozen=True)
class TextualInversionConfig:
    """Textual-inversion settings; defaults are the reference implementation's."""

    num_steps: int = 5000
    learning_rate: float = 1e-3
    batch_size: int = 1
    t_min: int = 250
    t_max: int = 1000  # exclusive
    weight_decay: float = 1e-2  # AdamW default of the diffusers textual-inversion example
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        if self.num_steps < 1 or self.batch_size < 1:
            raise ValueError("num_steps and batch_size must be >= 1")
        if not 0 <= self.t_min < self.t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got {self.t_min}, {self.t_max}")
        if "{token}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{token}}': {self.prompt_template!r}")


def single_token_id(components: SDComponents, word: str) -> int | None:
    """The id of ``word`` if the tokenizer encodes it as exactly one known token, else None."""
    ids = components.tokenizer.encode(word.replace("_", " ").strip(), add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 and ids[0] != components.tokenizer.unk_token_id else None


def add_class_token(components: SDComponents, token: str, init_word: str,
                    fallback_word: str = "object") -> int:
    """Add ``token`` to the tokenizer/text encoder and initialise its embedding; return its id.

    The embedding starts as a copy of ``init_word``'s (the class name) when that is one known
    token, else of ``fallback_word``. A token that is already present keeps its id and is
    re-initialised.
    """
    tokenizer, encoder = components.tokenizer, components.text_encoder
    if token in tokenizer.get_vocab():
        token_id = int(tokenizer.convert_tokens_to_ids(token))
        if token_id < tokenizer.vocab_size:
            raise ValueError(f"{token!r} is a word of the base vocabulary; use a new token like '<class-3>'")
    else:
        if tokenizer.add_tokens(token) != 1:
            raise ValueError(f"could not add the token {token!r} to the tokenizer")
        token_id = int(tokenizer.convert_tokens_to_ids(token))
    if tokenizer.encode(token, add_special_tokens=False) != [token_id]:
        raise ValueError(f"the token {token!r} is not encoded as one token; choose e.g. '<class-3>'")
    if encoder.get_input_embeddings().num_embeddings < len(tokenizer):
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        encoder.get_input_embeddings().weight.requires_grad_(False)
    init_id = single_token_id(components, init_word)
    source = init_word
    if init_id is None or init_id == token_id:
        init_id, source = single_token_id(components, fallback_word), fallback_word
        if init_id is None:
            raise ValueError(f"fallback word {fallback_word!r} is not a single token")
    weight = encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_id]
    logger.info("token %s (id %d) initialised from %r", token, token_id, source)
    return token_id


def set_token_embedding(components: SDComponents, token_id: int, embedding: torch.Tensor) -> None:
    """Write ``embedding`` (D,) into row ``token_id`` of the text encoder's embedding matrix."""
    weight = components.text_encoder.get_input_embeddings().weight
    if embedding.shape != weight.shape[1:]:
        raise ValueError(f"embedding of shape {tuple(embedding.shape)} for rows of {tuple(weight.shape[1:])}")
    with torch.no_grad():
        weight[token_id] = embedding.to(weight.device, weight.dtype)


def train_textual_inversion(components: SDComponents, images: torch.Tensor, token: str, *,
                            config: TextualInversionConfig = TextualInversionConfig(),
                            progress: Progress = None,
                            losses: list[float] | None = None) -> torch.Tensor:
    """Optimise the embedding of ``token`` (already added) on ``images``; return it, (D,) float32.

    ``images`` is (K, 3, R, R) in [-1, 1] at the model resolution. The learned row stays
    installed in the text encoder. Per-step losses are appended to ``losses`` if given.
    Raises :class:`NonFiniteLossError` on a NaN/inf loss (the row is then reset).
    """
    tokenizer, encoder, unet = components.tokenizer, components.text_encoder, components.unet
    token_id = int(tokenizer.convert_tokens_to_ids(token))
    if token_id == tokenizer.unk_token_id or token not in tokenizer.get_vocab():
        raise ValueError(f"token {token!r} is not in the tokenizer: call add_class_token first")
    prompt = config.prompt_template.format(token=token)
    input_ids = tokenize(components, [prompt])
    if int((input_ids == token_id).sum()) != 1:
        raise ValueError(f"prompt {prompt!r} must contain the token {token!r} exactly once")

    latents = encode_images(components, images)  # posterior means x scaling factor, once
    num_train = int(components.scheduler.config.num_train_timesteps)
    t_max = min(config.t_max, num_train)
    alphas = components.scheduler.alphas_cumprod.to(components.device, torch.float32)
    prediction_type = components.scheduler.config.prediction_type
    generator = torch.Generator().manual_seed(config.seed)

    embeddings = encoder.get_input_embeddings()
    weight = embeddings.weight
    original = weight.detach().clone()
    weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([weight], lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    reporter = Reporter("textual inversion", config.num_steps, progress, log_every=config.log_every,
                        logger=logger)
    batch = config.batch_size
    try:
        for step in range(1, config.num_steps + 1):
            index = torch.randint(latents.shape[0], (batch,), generator=generator)
            noise = torch.randn((batch, *latents.shape[1:]), generator=generator)
            timesteps = torch.randint(config.t_min, t_max, (batch,), generator=generator)
            z0 = latents[index.to(latents.device)].float()
            noise = noise.to(components.device)
            timesteps = timesteps.to(components.device)
            a = alphas[timesteps].view(-1, 1, 1, 1)
            noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
            target = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * z0

            hidden = encoder(input_ids.expand(batch, -1))[0]
            prediction = unet(noisy.to(components.dtype), timesteps,
                              encoder_hidden_states=hidden.to(components.dtype)).sample
            loss = torch.nn.functional.mse_loss(prediction.float(), target)
            value = float(loss.detach())
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLossError("textual inversion", step, value)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():  # only the new row may change: restore all others exactly
                weight[:token_id] = original[:token_id]
                weight[token_id + 1:] = original[token_id + 1:]
            if losses is not None:
                losses.append(value)
            reporter.update(step, loss=value)
    except NonFiniteLossError:
        with torch.no_grad():
            weight.copy_(original)
        raise
    finally:
        reporter.close()
        weight.requires_grad_(False)
        weight.grad = None
    return weight[token_id].detach().float().cpu().clone()
