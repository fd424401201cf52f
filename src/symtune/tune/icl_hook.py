"""The default evaluation hook: a small fixed slice of the in-context-learning suite, run on the model in
training (rank classification; by default the no-relevant-label settings: held-out symbols and flipped labels)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence

HOOK_METRICS = ("acc", "acc_norm_tokens")


def icl_eval_fn(data_dir: str | None = None, settings: Sequence[str] = ("symbol", "flipped"), limit: int = 8,
                tasks: Sequence[str] | None = None, k: int = 4, seed: int = 0, batch_size: int = 8) -> Callable:
    """`eval_fn(model, tokenizer) -> {"<setting>/<metric>": accuracy}` over the same queries at every call."""

    def eval_fn(model, tokenizer) -> dict:
        from symtune.evaluate import EvalConfig, evaluate
        from symtune.scoring import HFBackend

        with tempfile.TemporaryDirectory() as d:  # a fresh result cache: the weights change between calls
            config = EvalConfig(model="in-training", out=d, suite="icl", settings=list(settings), data_dir=data_dir,
                                limit=limit, tasks=list(tasks) if tasks else None, k=k, seed=seed, generate=False,
                                batch_size=batch_size)
            backend = HFBackend(model, tokenizer, batch_size=batch_size, identity={"backend": "hf", "model": "in-training"})
            results = evaluate(config, backend=backend, progress=False)
        return {f"{setting}/{m}": stats.value(m) for setting, stats in results.icl.summary.items()
                for m in HOOK_METRICS if stats.value(m) is not None}

    return eval_fn
