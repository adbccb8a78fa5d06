"""Textual inversion (Gal et al. 2022): learn one new token embedding per class from a few images.

A *group* of classes (the classes of an episode, say) learns together: every optimisation step
is one UNet batch holding ``batch_size`` samples of each class, each with its class's prompt,
noise and timestep. Each class has its own random stream and its own loss term, and AdamW
works element by element, so a class learns the same embedding whatever group it is in
(grouped equals one-at-a-time to rounding). The learned rows are float32 master copies kept
outside the text encoder and substituted into its token-embedding output during training: no
other row of the embedding matrix is ever written (the diffusers example instead optimises the
whole matrix and copies the other rows back after every step; the result is the same).

The inner loop never waits for the device: random draws are staged a chunk of ``log_every``
steps at a time, losses stay on the device and are read back once per chunk. (In fp16 the
loss scaler's overflow check goes to the fused optimiser, which needs no read-back either.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .diffusion import add_noise, encode_images, noise_level, tokenize, velocity
from .errors import NonFiniteLossError
from .models import SDComponents
from .progress import Progress, Reporter

from tint_distill.params import Settings

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_TEMPLATE = "a drawing of a {token}"  # the words the offline generator was pre-trained with


@dataclass(frozen=True)
class TextualInversionConfig(Settings):
    """Textual-inversion settings. The defaults are conf/base's ``inversion.textual_inversion``
    (sized for the small offline generator on a CPU); the reference implementation's values
    (conf/gpu) are in the comments."""

    num_steps: int = 60  # reference: 5000
    learning_rate: float = 5e-3  # reference: 1e-3 (constant, AdamW)
    batch_size: int = 1
    t_min: int = 250
    t_max: int = 1000  # exclusive
    weight_decay: float = 1e-2  # AdamW default of the diffusers textual-inversion example
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # conf/gpu (natural photos): "A photo of a {token}"
    seed: int = 0
    log_every: int = 100

    def check(self) -> None:
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


def _token_id(components: SDComponents, token: str) -> int:
    tokenizer = components.tokenizer
    token_id = int(tokenizer.convert_tokens_to_ids(token))
    if token_id == tokenizer.unk_token_id or token not in tokenizer.get_vocab():
        raise ValueError(f"token {token!r} is not in the tokenizer: call add_class_token first")
    return token_id


class _RandomDraws:
    """Each class's own stream of (support index, noise, timestep) draws, staged on the device a
    chunk of steps at a time. A class draws exactly what it would draw trained alone."""

    def __init__(self, counts: Sequence[int], offsets: Sequence[int], latent_shape: tuple[int, ...],
                 config: TextualInversionConfig, t_max: int, device: torch.device):
        self.counts, self.offsets, self.shape = list(counts), list(offsets), latent_shape
        self.config, self.t_max, self.device = config, t_max, device
        self.rngs = [torch.Generator().manual_seed(config.seed) for _ in counts]

    def chunk(self, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(index (n, G*B), noise (n, G*B, C, h, w), timesteps (n, G*B))`` for the next ``steps`` steps."""
        batch, indices, noises, times = self.config.batch_size, [], [], []
        for _ in range(steps):
            for count, offset, rng in zip(self.counts, self.offsets, self.rngs):
                indices.append(torch.randint(count, (batch,), generator=rng) + offset)
                noises.append(torch.randn((batch, *self.shape), generator=rng))
                times.append(torch.randint(self.config.t_min, self.t_max, (batch,), generator=rng))
        group = len(self.counts) * batch
        staged = [torch.cat(x).view(steps, group, *x[0].shape[1:]) for x in (indices, noises, times)]
        if self.device.type == "cuda":  # pinned memory: the copies do not block the host
            return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in staged)
        return tuple(t.to(self.device) for t in staged)


def train_textual_inversion_group(components: SDComponents, images: Sequence[torch.Tensor], tokens: Sequence[str],
                                  *, config: TextualInversionConfig = TextualInversionConfig(),
                                  progress: Progress = None,
                                  losses: list[list[float]] | None = None) -> list[torch.Tensor | NonFiniteLossError]:
    """Learn the embeddings of ``tokens`` (already added), class ``g`` from ``images[g]``, together.

    ``images[g]`` is (K_g, 3, R, R) in [-1, 1] at the model resolution. Returns, per class, its
    learned embedding ((D,) float32, also installed in the text encoder), or the
    :class:`NonFiniteLossError` that stopped it: a class whose loss turns NaN/inf is dropped from
    the group at that step (its row keeps its initial value) and the others go on unaffected.
    Per-step losses of each class are appended to ``losses[g]`` if given.
    """
    if len(images) != len(tokens) or not tokens:
        raise ValueError(f"need one image batch per token, got {len(images)} batches for {len(tokens)} tokens")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"the tokens of a group must differ, got {list(tokens)}")
    device, group, batch = components.device, len(tokens), config.batch_size
    token_ids = [_token_id(components, token) for token in tokens]
    prompts = [config.prompt_template.format(token=token) for token in tokens]
    input_ids = tokenize(components, prompts)  # (G, L)
    for prompt, token, token_id, ids in zip(prompts, tokens, token_ids, input_ids):
        if int((ids == token_id).sum()) != 1:
            raise ValueError(f"prompt {prompt!r} must contain the token {token!r} exactly once")
    per_class = [encode_images(components, x) for x in images]  # posterior means x scaling factor, once
    latents = torch.cat(per_class)
    counts = [x.shape[0] for x in per_class]
    offsets = [sum(counts[:g]) for g in range(group)]
    draws = _RandomDraws(counts, offsets, tuple(latents.shape[1:]), config,
                         min(config.t_max, int(components.scheduler.config.num_train_timesteps)), device)
    alphas = components.scheduler.alphas_cumprod.to(device, latents.dtype)
    prediction_type = components.scheduler.config.prediction_type

    sample_ids = input_ids.repeat_interleave(batch, dim=0)  # (G*B, L): class g's samples are rows g*B..g*B+B-1
    owner = torch.arange(group, device=device).repeat_interleave(batch)
    slots = (sample_ids == torch.tensor(token_ids, device=device)[owner, None]).unsqueeze(-1)  # (G*B, L, 1)
    embeddings = components.text_encoder.get_input_embeddings()
    initial = embeddings.weight[token_ids].detach().to(torch.float32).clone()  # (G, D)
    rows = initial.clone().requires_grad_(True)  # float32 master copies of the learned rows

    def substitute(module, inputs, output):  # each sample's placeholder position gets its class's row
        return torch.where(slots, rows[owner].to(output.dtype).unsqueeze(1), output)

    half = components.autocast_dtype == torch.float16  # fp16 needs loss scaling; bf16 does not
    optimizer = torch.optim.AdamW([rows], lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                                  fused=True if half else None)
    scaler = torch.amp.GradScaler(device.type, enabled=half)
    alive = torch.ones(group, dtype=torch.bool, device=device)
    history = torch.empty(config.num_steps, group, device=device)
    chunk = max(1, config.log_every)
    stage = "textual inversion" + (f" ({group} classes)" if group > 1 else "")
    reporter = Reporter(stage, config.num_steps, progress, log_every=chunk, logger=logger)
    hook = embeddings.register_forward_hook(substitute)
    try:
        for first in range(0, config.num_steps, chunk):
            steps = min(chunk, config.num_steps - first)
            index, noise, timesteps = draws.chunk(steps)
            for j in range(steps):
                z0, t = latents[index[j]], timesteps[j]
                a = noise_level(alphas, t)
                noisy = add_noise(z0, noise[j], a)
                target = noise[j] if prediction_type == "epsilon" else velocity(z0, noise[j], a)
                with components.autocast():
                    hidden = components.text_encoder(sample_ids)[0]
                    prediction = components.unet(noisy.to(components.dtype), t,
                                                 encoder_hidden_states=hidden.to(components.dtype)).sample
                # each class's own mean squared error, in float32: its row's gradient is its own
                loss = ((prediction.float() - target) ** 2).reshape(group, -1).mean(dim=1)
                history[first + j] = loss.detach()
                alive &= torch.isfinite(loss.detach())
                scaler.scale(torch.where(alive, loss, 0.0).sum()).backward()
                # a failed class's gradient may be NaN (0 x NaN): it must not reach the others' step
                rows.grad.masked_fill_(~alive.unsqueeze(1), 0.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():  # a class that failed keeps its initial row
                    rows.copy_(torch.where(alive.unsqueeze(1), rows, initial))
            values, living = history[first:first + steps].cpu(), alive.cpu()  # this chunk's one read-back
            finite = values[:, torch.isfinite(values).all(dim=0) & living]
            for j in range(steps):
                reporter.update(first + j + 1, **({"loss": float(finite[j].mean())} if finite.numel() else {}))
    finally:
        hook.remove()
        reporter.close()
    history = history.cpu()
    learned = rows.detach().float().cpu()
    results: list[torch.Tensor | NonFiniteLossError] = []
    for g, (token, token_id) in enumerate(zip(tokens, token_ids)):
        bad = (~torch.isfinite(history[:, g])).nonzero()
        if bad.numel():
            step = int(bad[0]) + 1
            if losses is not None:
                losses[g].extend(history[:step, g].tolist())
            results.append(NonFiniteLossError("textual_inversion", step, float(history[step - 1, g]),
                                              detail=f"token {token}"))
            continue
        set_token_embedding(components, token_id, learned[g])
        if losses is not None:
            losses[g].extend(history[:, g].tolist())
        results.append(learned[g].clone())
    return results


def train_textual_inversion(components: SDComponents, images: torch.Tensor, token: str, *,
                            config: TextualInversionConfig = TextualInversionConfig(),
                            progress: Progress = None,
                            losses: list[float] | None = None) -> torch.Tensor:
    """Optimise the embedding of one ``token`` (already added) on ``images``; return it, (D,) float32.

    ``images`` is (K, 3, R, R) in [-1, 1] at the model resolution. The learned row stays
    installed in the text encoder. Per-step losses are appended to ``losses`` if given.
    Raises :class:`NonFiniteLossError` on a NaN/inf loss (the row keeps its initial value).
    """
    history: list[list[float]] = [[]]
    (result,) = train_textual_inversion_group(components, [images], [token], config=config, progress=progress,
                                              losses=history)
    if losses is not None:
        losses.extend(history[0])
    if isinstance(result, NonFiniteLossError):
        raise result
    return result
