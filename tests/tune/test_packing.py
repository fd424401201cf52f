"""Packing without attention across examples: a packed batch gives exactly the loss of the examples run alone."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from symtune.tune.data import IGNORE, PackedCollator, pack, packing_is_exact
from symtune.tune.head import add_target_only_head

LENGTHS = [(37, 3), (12, 5), (61, 2), (25, 4), (8, 6), (44, 3)]  # (prompt, target incl. EOS)


def _model(attn: str = "sdpa", vocab: int = 300) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512, tie_word_embeddings=True,
                      attn_implementation=attn, initializer_range=0.1)  # sharper than default: attention matters
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).train()


def _examples(vocab: int = 300) -> Dataset:
    g = torch.Generator().manual_seed(1)
    rows = {"input_ids": [], "labels": []}
    for p, t in LENGTHS:
        ids = torch.randint(3, vocab, (p + t,), generator=g).tolist()
        rows["input_ids"].append(ids)
        rows["labels"].append([IGNORE] * p + ids[p:])
    return Dataset.from_dict(rows)


def _separate_loss(model, ds: Dataset) -> torch.Tensor:
    """Token-weighted mean over all target tokens, each example run alone."""
    total, n = 0.0, 0
    for row in ds:
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        tgt = labels[0, 1:]
        total = total + torch.nn.functional.cross_entropy(logits, tgt, ignore_index=IGNORE, reduction="sum")
        n += int((tgt != IGNORE).sum())
    return total / n


def _packed_loss(model, batch: dict) -> torch.Tensor:
    batch = {k: v for k, v in batch.items() if k != "num_real_tokens"}
    labels = batch.pop("labels")
    logits = model(**batch, use_cache=False).logits[:, :-1].float()
    tgt = labels[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum") / (tgt != IGNORE).sum()


def _grads(model, loss) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("flat", [False, True])
def test_packed_batch_loss_and_gradients_equal_examples_run_one_by_one(attn, flat):
    model = _model(attn)
    ds = _examples()
    packed = pack(ds, pack_length=100)
    assert len(packed) < len(ds)  # several examples did share a sequence
    batch = PackedCollator(pad_token_id=0, flat=flat)([packed[i] for i in range(len(packed))])
    loss_packed = _packed_loss(model, batch)
    g_packed = _grads(model, loss_packed)
    loss_sep = _separate_loss(model, ds)
    g_sep = _grads(model, loss_sep)
    assert loss_packed.item() == pytest.approx(loss_sep.item(), rel=1e-6, abs=1e-6)
    assert torch.allclose(g_packed, g_sep, rtol=1e-4, atol=1e-6)


def test_concatenation_without_position_ids_differs():
    """The negative control: the comparison above detects attention across examples."""
    model = _model()
    ds = _examples()
    packed = pack(ds, pack_length=100)
    batch = PackedCollator(pad_token_id=0)([packed[i] for i in range(len(packed))])
    batch.pop("position_ids")  # plain causal attention over the whole row
    assert abs(_packed_loss(model, batch).item() - _separate_loss(model, ds).item()) > 1e-3  # >> the 1e-6 above


def test_pack_keeps_every_example_whole():
    ds = _examples()
    packed = pack(ds, pack_length=100)
    assert sum(len(r["input_ids"]) for r in packed) == sum(p + t for p, t in LENGTHS)
    assert sorted(n for r in packed for n in r["seq_lengths"]) == sorted(p + t for p, t in LENGTHS)
    assert all(len(r["input_ids"]) <= 100 and sum(r["seq_lengths"]) == len(r["input_ids"]) for r in packed)
    # every target token survives, with its label
    assert sum(sum(x != IGNORE for x in r["labels"]) for r in packed) == sum(t for _, t in LENGTHS)


def test_pack_refuses_examples_longer_than_the_pack():
    from symtune.tune import TuneError

    with pytest.raises(TuneError, match="pack_length"):
        pack(_examples(), pack_length=50)


def test_collator_pads_rows_with_ignored_one_token_examples():
    batch = PackedCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "seq_lengths": [2, 1]},
                                           {"input_ids": [8], "labels": [8], "seq_lengths": [1]}])
    assert batch["position_ids"].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert "attention_mask" not in batch and int(batch["num_real_tokens"]) == 4


def test_runtime_packing_check():
    model = _model()
    assert packing_is_exact(model, PackedCollator(pad_token_id=0))[0]
    # a collator that gives a full attention mask instead of position ids lets examples see each other
    ok, diff = packing_is_exact(model, PackedCollator(pad_token_id=0, packed=False))
    assert not ok and diff > 1e-3


def test_runtime_packing_check_in_bf16():
    """As flash kernels are checked (bf16 autocast): rounding apart, packed equals separate; a leak still fails."""
    model = _model()
    for flat in (False, True):
        ok, diff = packing_is_exact(model, PackedCollator(pad_token_id=0, flat=flat), autocast_dtype=torch.bfloat16)
        assert ok, diff
    ok, diff = packing_is_exact(model, PackedCollator(pad_token_id=0, packed=False), autocast_dtype=torch.bfloat16)
    assert not ok and diff > 1e-3


def test_target_only_head_matches_full_head():
    """The CPU LM head on labelled positions only gives TRL's fused-head loss, entropy and gradients."""
    from trl.trainer.utils import add_fused_lm_head

    ds = _examples()
    batch = PackedCollator(pad_token_id=0)([r for r in pack(ds, pack_length=100)])
    batch.pop("num_real_tokens")
    results = []
    for ours in (False, True):
        model = _model()
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        if ours:
            assert add_target_only_head(model)
        out = model(**batch, fused_lm_head=True)
        results.append((out.loss.detach(), out.entropy.detach(), out.is_top1, _grads(model, out.loss)))
    (l0, e0, t0, g0), (l1, e1, t1, g1) = results
    assert l1.item() == pytest.approx(l0.item(), rel=1e-6)
    assert torch.allclose(e0, e1, atol=1e-5) and torch.equal(t0, t1)
    assert torch.allclose(g0, g1, rtol=1e-4, atol=1e-7)
    assert l0.item() == pytest.approx(_separate_loss(_model(), ds).item(), rel=1e-6)
