"""Mixture records -> token ids with completion-only labels -> packed sequences -> batches.

An example is `prompt ids + completion ids + [EOS]`; labels are -100 on the prompt. The prompt is tokenised
alone, exactly as the model sees it at inference; the completion is the rest of the tokenisation of
prompt + completion when that starts with the prompt's ids, else the completion tokenised alone.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import TuneError

log = logging.getLogger(__name__)
IGNORE = -100


def check_special_tokens(tokenizer, model=None, eos_token: str | None = None) -> list[str]:
    """Make sure the tokenizer has an EOS (to append to targets) and a pad token; return what was changed."""
    notes = []
    if eos_token is not None:
        if eos_token not in tokenizer.get_vocab():
            raise TuneError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary; pass a token it has")
        if tokenizer.eos_token != eos_token:
            notes.append(f"EOS set to {eos_token!r} (was {tokenizer.eos_token!r})")
            tokenizer.eos_token = eos_token
    if tokenizer.eos_token_id is None:
        raise TuneError("the tokenizer has no EOS token, so targets cannot be terminated; pass --eos-token TOKEN "
                        "with a token from its vocabulary (e.g. '</s>' or '<|endoftext|>')")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        notes.append(f"the tokenizer has no pad token; using EOS {tokenizer.eos_token!r} for padding "
                     "(padding is never trained on)")
    if model is not None:
        text_config = model.config.get_text_config()
        if text_config.eos_token_id is None:
            text_config.eos_token_id = tokenizer.eos_token_id
        if getattr(text_config, "pad_token_id", None) is None:
            text_config.pad_token_id = tokenizer.pad_token_id
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
            if tokenizer.eos_token_id not in eos:
                gen.eos_token_id = [tokenizer.eos_token_id, *(e for e in eos if e is not None)]
            if gen.pad_token_id is None:
                gen.pad_token_id = tokenizer.pad_token_id
    for n in notes:
        log.warning(n)
    return notes


def tokenize_example(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int], bool]:
    """(prompt ids, completion ids + EOS, whether the joint tokenisation split cleanly at the boundary)."""
    p = tokenizer(prompt)["input_ids"]
    joint = tokenizer(prompt + completion)["input_ids"]
    clean = joint[: len(p)] == p
    c = joint[len(p):] if clean else tokenizer(completion, add_special_tokens=False)["input_ids"]
    if c and c[-1] == tokenizer.eos_token_id:  # tokenizers that append EOS themselves
        c = c[:-1]
    return p, [*c, tokenizer.eos_token_id], clean


@dataclass
class Prepared:
    dataset: Any  # datasets.Dataset with input_ids, labels (and seq_lengths when packed)
    stats: dict


def tokenize_records(dataset, tokenizer, max_input_tokens: int, max_target_tokens: int,
                     max_examples: int | None = None, num_proc: int | None = None,
                     cache_dir: Path | None = None) -> Prepared:
    """Tokenise prompt/completion records; drop (and count) those over the limits; check every EOS."""
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise TuneError(f"mixture records lack {sorted(missing)}; rebuild the mixture with `symtune mixture`")
    eos_text = tokenizer.eos_token

    def encode(batch):
        out = {"input_ids": [], "labels": [], "prompt_tokens": [], "target_tokens": [], "clean_split": [],
               "eos_in_text": []}
        for prompt, completion in zip(batch["prompt"], batch["completion"]):
            p, c, clean = tokenize_example(tokenizer, prompt, completion)
            out["input_ids"].append(p + c)
            out["labels"].append([IGNORE] * len(p) + c)
            out["prompt_tokens"].append(len(p))
            out["target_tokens"].append(len(c))
            out["clean_split"].append(clean)
            out["eos_in_text"].append(bool(eos_text) and (eos_text in prompt or eos_text in completion))
        return out

    cache = None
    if cache_dir is not None:  # not next to the mixture, which may be shared or read-only
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache = str(Path(cache_dir) / "tokenized.arrow")
    tokenized = dataset.map(encode, batched=True, remove_columns=dataset.column_names, num_proc=num_proc,
                            cache_file_name=cache, desc="tokenizing mixture")
    prompt_len, target_len = tokenized["prompt_tokens"], tokenized["target_tokens"]
    reasons = Counter()
    keep = []
    for i, (p, t) in enumerate(zip(prompt_len, target_len)):
        if p > max_input_tokens:
            reasons[f"prompt over {max_input_tokens} tokens"] += 1
        elif t > max_target_tokens:
            reasons[f"target over {max_target_tokens} tokens (EOS included)"] += 1
        else:
            keep.append(i)
    if not keep:
        raise TuneError(f"all {len(tokenized)} examples exceed the length limits ({dict(reasons)}); raise "
                        "--max-input-tokens / --max-target-tokens or rebuild the mixture with a smaller budget")
    kept = tokenized.select(keep) if len(keep) < len(tokenized) else tokenized
    labels = kept["labels"]
    bad_eos = sum(1 for lab in labels if lab[-1] != tokenizer.eos_token_id)
    if bad_eos:  # cannot happen unless tokenize_example is broken; a wrong target would be silent otherwise
        raise TuneError(f"{bad_eos} targets do not end with EOS id {tokenizer.eos_token_id}")
    stats = {
        "examples_in": len(tokenized),
        "examples": len(kept),
        "dropped": dict(reasons),
        "dropped_total": sum(reasons.values()),
        "tokens": int(sum(len(x) for x in kept["input_ids"])),
        "target_tokens": int(sum(sum(1 for v in lab if v != IGNORE) for lab in labels)),
        "max_prompt_tokens": int(max(kept["prompt_tokens"])),
        "max_target_tokens": int(max(kept["target_tokens"])),
        "unclean_boundary": int(len(kept) - sum(kept["clean_split"])),
        "eos_in_text": int(sum(kept["eos_in_text"])),
        "eos_token": eos_text,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if reasons:
        log.warning("dropped %d of %d examples over the length limits: %s", stats["dropped_total"],
                    len(tokenized), dict(reasons))
    if stats["unclean_boundary"]:
        log.warning("%d prompts are not a token prefix of prompt+completion; their targets were tokenised alone",
                    stats["unclean_boundary"])
    if stats["eos_in_text"]:
        log.warning("%d records contain the EOS text %r inside the prompt or completion", stats["eos_in_text"],
                    eos_text)
    return Prepared(kept.select_columns(["input_ids", "labels"]), stats)


def pack(dataset, pack_length: int):
    """Best-fit-decreasing packing (TRL's), adding `seq_lengths`; no example is cut (all fit already)."""
    from trl import pack_dataset

    longest = max(len(x) for x in dataset["input_ids"])
    if longest > pack_length:
        raise TuneError(f"an example has {longest} tokens, more than pack_length={pack_length}; raise pack_length "
                        "or lower max_input_tokens / max_target_tokens")
    return pack_dataset(dataset, pack_length, strategy="bfd")


def position_ids_for(seq_lengths: list[int]) -> list[int]:
    return [i for n in seq_lengths for i in range(n)]


@dataclass
class PackedCollator:
    """Pads a batch of packed (or plain) sequences and gives each example its own position ids.

    Attention must not cross examples. Two exact ways, chosen by the attention kernel:
    - rows (sdpa, eager, flex): one row per packed sequence, `position_ids` restarting at 0 for every
      example and no `attention_mask`; transformers then builds a block-diagonal causal mask.
    - flat (flash attention): every sequence of the batch in one row with `cu_seq_lens_*`, the
      variable-length kernel's boundaries (flash kernels ignore position-id restarts across rows).
    Without packing, rows are padded on the right and an ordinary attention mask is given.
    """

    pad_token_id: int
    flat: bool = False
    packed: bool = True

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = [list(e["input_ids"]) for e in examples]
        labels = [list(e["labels"]) for e in examples]
        lengths = [list(e["seq_lengths"]) if "seq_lengths" in e else [len(x) for x in [e["input_ids"]]]
                   for e in examples]
        if self.flat:
            pos = [p for ln in lengths for p in position_ids_for(ln)]
            seqs = [n for ln in lengths for n in ln]
            cu = torch.tensor([0, *torch.tensor(seqs).cumsum(0).tolist()], dtype=torch.int32)
            return {"input_ids": torch.tensor([sum(ids, [])]), "labels": torch.tensor([sum(labels, [])]),
                    "position_ids": torch.tensor([pos]), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                    "max_length_q": max(seqs), "max_length_k": max(seqs), "num_real_tokens": torch.tensor(len(pos))}
        width = max(len(x) for x in ids)
        batch = {
            "input_ids": torch.tensor([x + [self.pad_token_id] * (width - len(x)) for x in ids]),
            "labels": torch.tensor([x + [IGNORE] * (width - len(x)) for x in labels]),
        }
        if self.packed:
            # padding gets position 0 each: a one-token "example" that attends only to itself
            batch["position_ids"] = torch.tensor([position_ids_for(ln) + [0] * (width - sum(ln)) for ln in lengths])
        else:
            batch["attention_mask"] = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        batch["num_real_tokens"] = torch.tensor(sum(len(x) for x in ids))  # popped by the trainer, for the log
        return batch


def packing_is_exact(model, collator: PackedCollator, lengths=(7, 5, 3), atol: float = 1e-4,
                     autocast_dtype: torch.dtype | None = None) -> tuple[bool, float]:
    """Run examples packed and one by one through `model`; True if their next-token distributions agree.

    A cheap run-time proof for the actual model and attention kernel (a few dozen tokens). Probabilities, not
    log-probabilities, are compared: fp32 rounding through many layers moves the log-probability of a very
    unlikely token by ~1e-4, while attention across examples moves probabilities by ~1e-2.

    `autocast_dtype` (bf16 for flash kernels, which run in half precision only): run under autocast. The packed
    and separate runs then round differently (SmolLM2-135M: 0.018 apart in bf16, 3e-6 in fp32), so the packed run
    counts as exact when it is also within a quarter of how far one plain causal run over the concatenation (the
    examples attending to each other: 0.41 apart there) lands from the separate runs.
    """
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]
    packed = {"input_ids": sum(seqs, []), "labels": sum(seqs, []), "seq_lengths": list(lengths)}
    batch = collator([packed])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    batch.pop("labels")
    batch.pop("num_real_tokens")
    half = autocast_dtype is not None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=half):
            probs = model(**batch, use_cache=False).logits[0].float().softmax(-1)
            ref = torch.cat([model(torch.tensor([s], device=device), use_cache=False).logits[0] for s in seqs])
            ref = ref.float().softmax(-1)
            if half:
                leak = model(torch.tensor([packed["input_ids"]], device=device), use_cache=False).logits[0]
                leak_diff = (leak.float().softmax(-1) - ref).abs().max().item()
    finally:
        model.train(was_training)
    diff = (probs[: ref.shape[0]] - ref).abs().max().item()
    return diff <= atol or (half and diff <= leak_diff / 4), diff
