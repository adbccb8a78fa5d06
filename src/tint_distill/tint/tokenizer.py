"""The CLIP BPE tokenizer files (vocab.json + merges.txt), built offline.

Stable Diffusion 1.x uses OpenAI CLIP's byte-level BPE. Its merge list ships in the
open-clip-torch package (``open_clip/bpe_simple_vocab_16e6.txt.gz``, MIT), so a
transformers :class:`~transformers.CLIPTokenizer` with CLIP's exact ids can be built without
any download. The vocabulary order is CLIP's: the 256 byte symbols, the same with ``</w>``,
one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (49408 entries).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges of the file
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77


def find_clip_bpe_file() -> Path:
    """Return the path of CLIP's BPE merge file inside the installed open-clip-torch package.

    The package is located with :func:`importlib.util.find_spec` and is not imported.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The CLIP BPE vocabulary comes from the package open-clip-torch, which is not "
            "installed: `pip install open-clip-torch`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{BPE_FILE_NAME} not found in the open_clip package at "
                            f"{list(spec.submodule_search_locations)}")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte -> printable unicode character table (256 entries, CLIP's order)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


def clip_vocabulary(bpe_file: Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return CLIP's ``(token -> id, merges)`` built from the BPE merge file."""
    path = bpe_file or find_clip_bpe_file()
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} does not look like CLIP's BPE merge file")
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [START_TOKEN, END_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"built {len(vocab)} CLIP tokens, expected {VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


def write_clip_tokenizer_files(directory: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's BPE) into ``directory`` and return it.

    ``CLIPTokenizer(vocab_file, merges_file)`` or ``CLIPTokenizer.from_pretrained(directory)``
    then gives CLIP's ids, e.g. "a photo of a dog" -> 49406 320 1125 539 320 1929 49407.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocabulary()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(directory / "merges.txt", "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
        handle.writelines(f"{a} {b}\n" for a, b in merges)
    return directory


def prompt_token_ids(tokenizer, prompts: Sequence[str]):
    """The token ids (N, L) of ``prompts``, a CPU tensor: truncated and padded to the tokenizer's
    ``model_max_length`` (77 for CLIP), the one way every prompt of the project is tokenised."""
    tokens = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                       return_tensors="pt")
    return tokens.input_ids


def build_clip_tokenizer(directory: str | Path):
    """Write the tokenizer files into ``directory`` and return a loaded ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    directory = write_clip_tokenizer_files(directory)
    return CLIPTokenizer(
        vocab=str(directory / "vocab.json"),
        merges=str(directory / "merges.txt"),
        model_max_length=MODEL_MAX_LENGTH,
    )
