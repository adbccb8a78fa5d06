"""The offline CLIP tokenizer gives CLIP's ids."""

from __future__ import annotations

import json

import pytest
from transformers import CLIPTokenizer

from tint_distill.tint.tokenizer import VOCAB_SIZE, find_clip_bpe_file, write_clip_tokenizer_files

SENTENCES = [
    "a photo of a dog",
    "A photo of an astronaut riding a horse on Mars, 4k!",
    "Tiny models from tiny data: null-text inversion (2024) isn't hard",
    "naïve café — über 3.5 ×",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = write_clip_tokenizer_files(tmp_path_factory.mktemp("tok"))
    return CLIPTokenizer.from_pretrained(directory, local_files_only=True)


def test_known_clip_ids(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]


def test_same_ids_as_open_clip(tokenizer):
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
    reference = open_clip_tokenizer.SimpleTokenizer()
    for sentence in SENTENCES:
        expected = [reference.sot_token_id, *reference.encode(sentence), reference.eot_token_id]
        assert tokenizer(sentence).input_ids == expected, sentence


def test_files_and_added_token(tmp_path, tokenizer):
    write_clip_tokenizer_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").count("\n") == 49152 - 256 - 2 + 1
    assert find_clip_bpe_file().name == "bpe_simple_vocab_16e6.txt.gz"
    tokenizer.add_tokens("<class-3>")
    ids = tokenizer("A photo of an <class-3>").input_ids
    assert ids[-2] == 49408 and ids.count(49408) == 1


def test_prompt_token_ids_pad_and_truncate_to_the_model_length(tmp_path):
    from tint_distill.tint.tokenizer import MODEL_MAX_LENGTH, build_clip_tokenizer, prompt_token_ids

    tokenizer = build_clip_tokenizer(tmp_path)
    ids = prompt_token_ids(tokenizer, ["a photo of a dog", "", "dog " * 100])
    assert ids.shape == (3, MODEL_MAX_LENGTH) == (3, tokenizer.model_max_length)
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert ids[1, :2].tolist() == [49406, 49407] and ids[2, -1] == 49407  # "" and a truncated prompt
