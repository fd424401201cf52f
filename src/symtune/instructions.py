"""Instruction data mixed into a symbol-tuning mixture (`instruction_data`, the paper's share of instruction
tuning beside the symbol prompts): a local file or a hub dataset with prompt/completion or
instruction[/input]/output columns, sampled by seed; every problem is an error naming the source (the mixture's
own MixtureError, passed in: this module sits below mixture.py)."""

from __future__ import annotations

import random
from pathlib import Path

from .tasks.sources import hub_unreachable


def instruction_records(source: str, n: int, seed: int, error: type[Exception]) -> list[dict]:
    """`n` records drawn by `seed` from `source` (a .jsonl/.json/.csv/.parquet file or a hub dataset id), as
    mixture records with an instruction format and no label mapping; a source that cannot be used raises `error`."""
    import datasets

    suffix = Path(source).suffix.lstrip(".")
    if not Path(source).is_file():
        if suffix in ("jsonl", "json", "csv", "parquet") or "/" not in source or source.startswith((".", "/", "~")):
            raise error(f"instruction data {source!r} is not a file (nor a hub id 'user/dataset'); "
                        "pass a .jsonl/.json/.csv/.parquet file or a hub dataset id")
        why = hub_unreachable()
        if why:
            raise error(f"instruction data {source!r} is a hub id and the Hugging Face hub {why}; "
                        "pass a local file instead")
    try:
        if Path(source).is_file():
            ds = datasets.load_dataset({"jsonl": "json"}.get(suffix, suffix), data_files=source, split="train")
        else:
            ds = datasets.load_dataset(source, split="train")
    except Exception as e:
        raise error(f"cannot load instruction data {source!r}: {e}") from None
    cols = set(ds.column_names)
    if {"prompt", "completion"} <= cols:
        rows = [(r["prompt"], r["completion"]) for r in ds]
    elif {"instruction", "output"} <= cols:
        rows = [((r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")), r["output"]) for r in ds]
    else:
        raise error(
            f"instruction data {source!r} has columns {sorted(cols)}; need prompt/completion or instruction[/input]/output"
        )
    idx = sorted(random.Random(f"{seed}:instruction-data").sample(range(len(rows)), min(n, len(rows))))
    out = []
    for i in idx:
        p, c = rows[i]
        c = c if c[:1].isspace() else " " + c
        out.append({"prompt": p, "completion": c, "task": "instruction", "format": "instruction", "mapping": {}, "seed": seed, "index": i, "n_exemplars": 0})
    return out
