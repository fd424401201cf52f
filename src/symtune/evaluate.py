"""`symtune eval`: the paper's in-context-learning suite for any causal LM.

Plan every query (tasks x settings x trials), score each by rank classification (all label candidates'
log-likelihoods) and by greedy generation (exact match after light normalisation), cache each result
under a key of (model identity, whole prompt, candidates, rule), and write results.json + samples.jsonl.
The plan, and the config it is made from (`EvalConfig`), are in `planning.py`; the runner (cache, chunks, processes) is `runner.py`; the results'
types are `results.py`. `icl_eval_fn` is a small slice of the suite that tuning calls during training (its
callers hand it to `tune(eval_fn=...)`; tuning itself does not import evaluation).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from .cache import ResultCache
from .episodes import SETTINGS
from .files import write_atomic
from .metrics import format_per_task, format_summary, summarize
from .planning import EvalConfig, EvalError, plan_evaluation
from .provenance import package_versions
from .results import EvalResults, Timing
from .runner import Processes, for_process, processes, run_cached
from .scoring import (
    CandidateScore,
    HFBackend,
    OpenAICompletionsBackend,
    generation_match,
    hf_backend,
    rank_predictions,
)


def make_backend(config: EvalConfig):
    if config.server:
        return OpenAICompletionsBackend(config.server, config.model, api_key=config.api_key, batch_size=config.batch_size)
    return hf_backend(config.model, dtype=config.dtype, device=config.device, adapter=config.adapter, batch_size=config.batch_size)


def score_items(items: list[dict], ranks: dict, gens: dict | None) -> list[dict]:
    samples = []
    for it in items:
        scores = [CandidateScore(**c) for c in ranks[it["id"]]]
        preds = rank_predictions(scores, it["labels"])
        correct = {m: p == it["gold"] for m, p in preds.items()}
        sample = {
            "id": it["id"], "task": it["task"], "setting": it["setting"], "trial": it["trial"], "query": it["query"],
            "prompt_sha256": hashlib.sha256(it["prompt"].encode()).hexdigest(), "n_exemplars": it["n_exemplars"],
            "candidates": it["labels"], "logprobs": [s.logprob for s in scores], "n_tokens": [s.n_tokens for s in scores],
            "gold": it["gold"], "predictions": preds,
        }  # fmt: skip
        if gens is not None:
            text = gens[it["id"]]
            pred, in_set = generation_match(text, it["labels"])
            sample.update(generation=text, gen_prediction=pred, in_label_set=in_set)
            correct["gen_acc"] = pred == it["gold"]
        else:
            correct["gen_acc"] = None
            sample["in_label_set"] = None
        sample["correct"] = correct
        samples.append(sample)
    return samples


class _Progress:
    """A tqdm bar that also tells `on_progress(done, total)` how far the whole evaluation is (both
    parts) and shows its answer, if any (e.g. the run's time left), after the bar."""

    def __init__(self, bar, on_progress, offset: int, total: int):
        self.bar, self.on_progress, self.offset, self.total = bar, on_progress, offset, total

    def update(self, n: int) -> None:
        self.bar.update(min(n, self.bar.total - self.bar.n) if self.bar.total else n)
        if self.on_progress:
            text = self.on_progress(self.offset + self.bar.n, self.total)
            if text:
                self.bar.set_postfix_str(text)


def evaluate(config: EvalConfig, backend=None, progress: bool = True, on_progress=None) -> EvalResults:
    """Run the evaluation; write results.json and samples.jsonl in config.out; return the results.
    `on_progress(queries done, queries in all)` is called as queries finish; a string it returns is shown
    after the progress bar."""
    t0 = time.time()
    out = Path(config.out)
    procs = processes()
    if backend is None:
        backend = make_backend(for_process(config, procs))
    items, report, algo = plan_evaluation(config, backend)  # bad tasks or settings fail here, before --out is made
    progress = progress and procs.main
    cache = ResultCache(out / "cache.jsonl", shard=f"rank{procs.rank}" if procs.world > 1 else None)
    resumed = len(cache)
    results = EvalResults(config=asdict(config), model=backend.identity, versions=package_versions(),
                          seeds={"seed": config.seed, "trials": list(range(config.trials))})  # fmt: skip
    total = len(items) + (len(algo.requests) if algo else 0)
    samples: list[dict] = []
    if config.suite in ("paper", "icl"):
        kinds = ("rank", "gen") if config.generate else ("rank",)
        with tqdm(total=len(items), desc="eval", unit="query", disable=not progress, dynamic_ncols=True) as bar:
            got = run_cached(items, backend, cache, kinds, config.max_new_tokens, _Progress(bar, on_progress, 0, total), procs)
        icl_samples = score_items(items, got["rank"], got.get("gen"))
        chance = {t: 1 / info.labels for t, info in report.items()}
        results.icl = summarize(icl_samples, chance, seed=config.seed)
        results.data = report
        samples += icl_samples
    if algo is not None:
        with tqdm(total=len(algo.requests), desc="algorithmic", unit="query", disable=not progress, dynamic_ncols=True) as bar:
            algo_samples, results.algorithmic = _algorithmic(algo, backend, cache, _Progress(bar, on_progress, len(items), total), procs)
        samples += algo_samples
    results.timing = Timing(seconds=round(time.time() - t0, 1), queries=len(samples), resumed_from_cache=resumed,
                            processes=procs.world)  # fmt: skip
    results.complete = True
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
        write_atomic(out / "results.json", results.to_json())
    procs.barrier()
    return results


def _algorithmic(algo, backend, cache: ResultCache, bar, procs: Processes):
    from .algorithmic import score_algorithmic
    from .algorithmic.suite import token_budgets

    reqs = algo.requests
    groups: dict[int, list[int]] = {}
    for i, budget in enumerate(token_budgets(reqs, backend.count_tokens)):
        groups.setdefault(budget, []).append(i)
    gens: list[str | None] = [None] * len(reqs)
    for n_new, idx in sorted(groups.items()):
        items = [{"id": reqs[i].id, "prompt": reqs[i].prompt} for i in idx]
        got = run_cached(items, backend, cache, ("gen",), n_new, bar, procs)["gen"]
        for i in idx:
            gens[i] = got[reqs[i].id]
    samples, tables = score_algorithmic(reqs, gens, algo.skipped)
    tables.config = algo.config
    return samples, tables


def format_results(results: EvalResults) -> str:
    """The terminal report: Table-1 summary, per-task table, algorithmic tables."""
    parts = []
    if results.icl is not None:
        parts += ["In-context learning (macro average over tasks; rank = highest log-likelihood label, "
                  "generation = greedy answer, exact match)", format_summary(results.icl, SETTINGS), "",
                  "Per task (rank / generation accuracy %)", format_per_task(results.icl)]  # fmt: skip
        skipped = {t: i.skipped for t, i in results.data.items() if i.skipped}
        trimmed = {t: i.trimmed for t, i in results.data.items() if i.trimmed}
        if skipped:
            parts.append(f"skipped: {json.dumps(skipped)}")
        if trimmed:
            parts.append(f"prompts with exemplars dropped to fit the context: {json.dumps(trimmed)}")
    if results.algorithmic is not None:
        from .algorithmic import format_algorithmic_tables

        parts += ["", "Algorithmic reasoning (greedy generation; exact / parsed-list match %)", format_algorithmic_tables(results.algorithmic)]
    t = results.timing
    parts.append(f"\n{t.queries} queries in {t.seconds}s ({t.resumed_from_cache} cached results reused)")
    return "\n".join(parts)


HOOK_METRICS = ("acc", "acc_norm_tokens")


def icl_eval_fn(data_dir: str | None = None, settings: Sequence[str] = ("symbol", "flipped"), limit: int = 8,
                tasks: Sequence[str] | None = None, k: int = 4, seed: int = 0, batch_size: int = 8) -> Callable:
    """The in-training evaluation handed to `tune(eval_fn=...)`: a small fixed slice of the ICL suite, scored
    on the model in training by rank classification (by default the no-relevant-label settings: held-out
    symbols and flipped labels). `eval_fn(model, tokenizer) -> {"<setting>/<metric>": accuracy}` over the
    same queries at every call."""

    def eval_fn(model, tokenizer) -> dict:
        with tempfile.TemporaryDirectory() as d:  # a fresh result cache: the weights change between calls
            config = EvalConfig(model="in-training", out=d, suite="icl", settings=list(settings), data_dir=data_dir,
                                limit=limit, tasks=list(tasks) if tasks else None, k=k, seed=seed, generate=False,
                                batch_size=batch_size)
            backend = HFBackend(model, tokenizer, batch_size=batch_size, identity={"backend": "hf", "model": "in-training"})
            results = evaluate(config, backend=backend, progress=False)
        return {f"{setting}/{m}": stats.value(m) for setting, stats in results.icl.summary.items()
                for m in HOOK_METRICS if stats.value(m) is not None}

    return eval_fn


def main(argv: list[str] | None = None) -> int:
    """`python -m symtune.evaluate CONFIG.json`: an evaluation from a saved EvalConfig (how `symtune run` hands
    an evaluation stage to `accelerate launch`)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m symtune.evaluate CONFIG.json (an EvalConfig's fields)", file=sys.stderr)
        return 2
    config = EvalConfig(**json.loads(Path(args[0]).read_text()))
    results = evaluate(config, progress=True)
    if processes().main:
        print(format_results(results))
    return 0


# EvalConfig and EvalError live in planning.py (below this module) and are imported from here as well.
__all__ = ["EvalConfig", "EvalError", "evaluate", "format_results", "icl_eval_fn", "make_backend", "score_items"]

if __name__ == "__main__":
    raise SystemExit(main())
