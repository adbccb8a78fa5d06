"""Safetensors files written by the project are the same bytes whichever process writes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

WRITE = """
import sys, torch
from tint_distill.tensor_files import save_tensors
tensors = {"null_embeddings": torch.linspace(0, 1, 12).reshape(3, 4), "token_embedding": torch.ones(4), "Z": torch.arange(3)}
save_tensors(tensors, sys.argv[1], metadata={"format": "tint-class-specialisation", "version": "2", "extra": "é"})
"""


@pytest.mark.slow  # over 10 s on the 2-core machine
def test_the_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path: Path):
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]  # the library's metadata order varies by process
    for file in files:
        subprocess.run([sys.executable, "-c", WRITE, str(file)], check=True)
    assert len({file.read_bytes() for file in files}) == 1
    with safe_open(files[0], "pt") as handle:
        assert handle.metadata() == {"format": "tint-class-specialisation", "version": "2", "extra": "é"}
        assert torch.equal(handle.get_tensor("null_embeddings"), torch.linspace(0, 1, 12).reshape(3, 4))
        assert torch.equal(handle.get_tensor("Z"), torch.arange(3))
