"""`symtune eval`: the paper's in-context-learning suite for any causal LM.

Plan every query (tasks x settings x trials), score each by rank classification (all label candidates'
log-likelihoods) and by greedy generation (exact match after light normalisation), cache each result
under a key of (model identity, whole prompt, candidates, rule), and write results.json + samples.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .cache import ResultCache, cache_key, write_atomic
from .episodes import (
    EVAL_SETTINGS,
    SETTINGS,
    BudgetError,
    draw_episode,
    exact_measure,
    fit_budget,
    get_setting,
    prepare_task,
    query_order,
    render,
)
from .formats import DEFAULT_EVAL_FORMAT, get_format
from .metrics import format_per_task, format_summary, summarize
from .provenance import package_versions
from .scoring import generation_match, rank_predictions
from .symbols import SymbolPool
from .tasks import load_catalogue, select_tasks

SUITES = ("paper", "icl", "algorithmic")
CHUNK = 16  # queries per scoring call: the cache is written after each


class EvalError(ValueError):
    """An evaluation that cannot run as configured."""


@dataclass
class EvalConfig:
    """What to evaluate and how.

    model: alias (smollm2-135m, gemma3-270m), hub id, local directory or .gguf file; adapter: a PEFT
    adapter; server: base URL of an OpenAI-compatible completions server (then `model` is its model name).
    suite: "paper" (the 11 held-out tasks in all settings + the algorithmic suite), "icl" (the tasks only)
    or "algorithmic". tasks/settings narrow it. max_queries: per task (the paper: 100); limit: a smaller
    prefix of the same seeded query order. k: exemplars per class. trials: independent exemplar draws.
    max_tokens: prompt budget (default: the model's context, at most 2048); generate: also score greedy
    generation. out: the output directory (results.json, samples.jsonl, cache.jsonl).
    """

    model: str = "smollm2-135m"
    out: str = "runs/eval"
    adapter: str | None = None
    server: str | None = None
    api_key: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = 8
    suite: str = "paper"
    tasks: list[str] | None = None
    settings: list[str] = field(default_factory=lambda: list(EVAL_SETTINGS))
    data_dir: str | None = None
    max_queries: int = 100
    limit: int | None = None
    k: int = 4
    seed: int = 0
    trials: int = 1
    fmt: str = DEFAULT_EVAL_FORMAT
    max_tokens: int | None = None
    generate: bool = True
    max_new_tokens: int = 8
    algorithmic: dict = field(default_factory=dict)  # arguments of build_algorithmic_requests (limit, settings, ...)

    def __post_init__(self):
        from .models import resolve_dtype

        self.dtype = resolve_dtype(self.dtype, self.device)  # "auto" is recorded as what it chose on this machine
        if self.suite not in SUITES:
            raise EvalError(f"unknown suite {self.suite!r}; choose from {', '.join(SUITES)}")
        for s in self.settings:
            get_setting(s)
        get_format(self.fmt)
        for name, v, lo in (("k", self.k, 1), ("trials", self.trials, 1), ("max_queries", self.max_queries, 1), ("batch_size", self.batch_size, 1)):
            if v < lo:
                raise EvalError(f"{name} must be >= {lo}, got {v}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"--limit must be >= 1, got {self.limit}")


class TokenCounter:
    """What planning needs from a backend, from a tokenizer alone (for `symtune export` without a model)."""

    def __init__(self, tokenizer, max_length: int = 2048):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.identity = {"tokenizer": getattr(tokenizer, "name_or_path", "")}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)


def make_backend(config: EvalConfig):
    from .scoring import OpenAICompletionsBackend, hf_backend

    if config.server:
        return OpenAICompletionsBackend(config.server, config.model, api_key=config.api_key, batch_size=config.batch_size)
    return hf_backend(config.model, dtype=config.dtype, device=config.device, adapter=config.adapter, batch_size=config.batch_size)


def plan_icl(config: EvalConfig, backend) -> tuple[list[dict], dict]:
    """Every (trial, task, setting, query) item with its prompt and candidates, and a report per task
    (data identity, skips, exemplar trims)."""
    catalogue = load_catalogue(config.data_dir)
    specs = select_tasks(catalogue, config.tasks, role=None if config.tasks else "eval", data_dir=config.data_dir)
    if not specs:
        raise EvalError(f"no evaluation tasks available (data dir: {config.data_dir}); pass --data-dir or --tasks")
    pool = SymbolPool("heldout")
    budget = min(config.max_tokens or 2048, backend.max_length) - config.max_new_tokens
    n_queries = min(config.limit or config.max_queries, config.max_queries)
    items, report = [], {}
    for spec in specs:
        task = prepare_task(spec, config.data_dir, purpose="eval")
        measure = exact_measure(task, backend.count_tokens)
        info = {"labels": len(spec.labels), "query_split": task.query_split, "exemplar_split": task.exemplar_split,
                "sources": task.sources, "sha256": task.sha256, "skipped": dict(task.skipped), "trimmed": 0}  # fmt: skip
        if len(task.queries) < n_queries:
            info["note"] = f"only {len(task.queries)} queries available"
        for trial in range(config.trials):
            for setting in config.settings:
                if SETTINGS[setting].labels == "flipped" and not spec.binary:
                    continue
                for q in query_order(task, config.seed, n_queries):
                    ep = draw_episode(task, q, seed=config.seed, setting=setting, k=config.k, pool=pool, fmt=config.fmt, trial=trial)
                    try:
                        fitted = fit_budget(task, ep, measure, budget)
                    except BudgetError:
                        info["skipped"]["over the model's context"] = info["skipped"].get("over the model's context", 0) + 1
                        continue
                    info["trimmed"] += fitted is not ep
                    prompt, completion = render(task, fitted)
                    labels = [fitted.mapping[x] for x in spec.labels]
                    items.append({
                        "id": f"{spec.name}/{setting}/{trial}/{q}", "task": spec.name, "setting": setting, "trial": trial,
                        "query": q, "prompt": prompt, "labels": labels, "gold": completion[1:],
                        "n_exemplars": len(fitted.exemplars),
                    })  # fmt: skip
        report[spec.name] = info
    return items, report


def _key(backend, kind: str, item: dict, max_new_tokens: int) -> str:
    parts = {"model": backend.identity, "kind": kind, "prompt": item["prompt"]}
    if kind == "rank":
        parts["candidates"] = [" " + x for x in item["labels"]]
    else:
        parts.update(max_new_tokens=max_new_tokens, stop=["\n"])
    return cache_key(**parts)


def _run_cached(items, backend, cache: ResultCache, kinds: tuple[str, ...], max_new_tokens: int, bar) -> dict:
    """{kind: {item id: value}} for every item, from the cache or computed in chunks (then cached).
    With both kinds, one pass over each prompt serves the ranking and the generation."""
    from .scoring import score_and_generate

    keys = {kind: [_key(backend, kind, it, max_new_tokens) for it in items] for kind in kinds}
    todo = [i for i in range(len(items)) if any(keys[k][i] not in cache for k in kinds)]
    bar.update(len(items) - len(todo))
    for s in range(0, len(todo), CHUNK):
        chunk = todo[s : s + CHUNK]
        prompts = [items[i]["prompt"] for i in chunk]
        if kinds == ("gen",):
            got = {"gen": backend.generate(prompts, max_new_tokens, ["\n"])}
        else:
            requests = [(p, [" " + x for x in items[i]["labels"]]) for p, i in zip(prompts, chunk)]
            if "gen" in kinds:
                scores, gens = score_and_generate(backend, requests, max_new_tokens, ["\n"])
                got = {"rank": scores, "gen": gens}
            else:
                got = {"rank": backend.loglikelihoods(requests)}
            got["rank"] = [[asdict(c) for c in sc] for sc in got["rank"]]
        cache.put_many({keys[k][i]: v for k in kinds for i, v in zip(chunk, got[k])})
        bar.update(len(chunk))
    return {k: {it["id"]: cache.get(key) for it, key in zip(items, keys[k])} for k in kinds}


def score_items(items: list[dict], ranks: dict, gens: dict | None) -> list[dict]:
    from .scoring import CandidateScore

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


def plan_evaluation(config: EvalConfig, backend):
    """Everything the evaluation will ask: (ICL items, per-task data report, algorithmic plan or None)."""
    items, report, algo = [], {}, None
    if config.suite in ("paper", "icl"):
        items, report = plan_icl(config, backend)
    if config.suite in ("paper", "algorithmic"):
        from .algorithmic import build_algorithmic_requests

        opts = {"limit": config.limit, **config.algorithmic}  # the algorithmic suite may have its own limit
        algo = build_algorithmic_requests(config.data_dir, seed=config.seed, **opts)
    return items, report, algo


def plan_tokens(config: EvalConfig, backend) -> int:
    """The prompt tokens an evaluation processes: its size for `symtune run`'s time estimate."""
    items, _, algo = plan_evaluation(config, backend)
    prompts = [it["prompt"] for it in items] + [r.prompt for r in (algo.requests if algo else [])]
    return sum(backend.count_tokens(p) for p in prompts)


class _Progress:
    """A tqdm bar that also tells `on_progress(done, total)` how far the whole evaluation is (both
    parts) and shows its answer, if any (e.g. the run's time left), after the bar."""

    def __init__(self, bar, on_progress, offset: int, total: int):
        self.bar, self.on_progress, self.offset, self.total = bar, on_progress, offset, total

    def update(self, n: int) -> None:
        self.bar.update(n)
        if self.on_progress:
            text = self.on_progress(self.offset + self.bar.n, self.total)
            if text:
                self.bar.set_postfix_str(text)


def evaluate(config: EvalConfig, backend=None, progress: bool = True, on_progress=None) -> dict:
    """Run the evaluation; write results.json and samples.jsonl in config.out; return the results.
    `on_progress(queries done, queries in all)` is called as queries finish; a string it returns is shown
    after the progress bar."""
    t0 = time.time()
    out = Path(config.out)
    backend = backend or make_backend(config)
    items, report, algo = plan_evaluation(config, backend)  # bad tasks or settings fail here, before --out is made
    cache = ResultCache(out / "cache.jsonl")
    resumed = len(cache)
    results = {"complete": False, "config": asdict(config), "model": backend.identity, "versions": package_versions(),
               "seeds": {"seed": config.seed, "trials": list(range(config.trials))}}  # fmt: skip
    total = len(items) + (len(algo.requests) if algo else 0)
    samples: list[dict] = []
    if config.suite in ("paper", "icl"):
        kinds = ("rank", "gen") if config.generate else ("rank",)
        with tqdm(total=len(items), desc="eval", unit="query", disable=not progress, dynamic_ncols=True) as bar:
            got = _run_cached(items, backend, cache, kinds, config.max_new_tokens, _Progress(bar, on_progress, 0, total))
        icl_samples = score_items(items, got["rank"], got.get("gen"))
        chance = {t: 1 / info["labels"] for t, info in report.items()}
        results["icl"] = summarize(icl_samples, chance, seed=config.seed)
        results["data"] = report
        samples += icl_samples
    if algo is not None:
        with tqdm(total=len(algo.requests), desc="algorithmic", unit="query", disable=not progress, dynamic_ncols=True) as bar:
            algo_samples, tables = _algorithmic(algo, backend, cache, _Progress(bar, on_progress, len(items), total))
        results["algorithmic"] = tables
        samples += algo_samples
    results["timing"] = {"seconds": round(time.time() - t0, 1), "queries": len(samples), "resumed_from_cache": resumed}
    results["complete"] = True
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    write_atomic(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


def _algorithmic(algo, backend, cache: ResultCache, bar):
    from .algorithmic import score_algorithmic
    from .algorithmic.suite import token_budgets

    reqs = algo.requests
    groups: dict[int, list[int]] = {}
    for i, budget in enumerate(token_budgets(reqs, backend.count_tokens)):
        groups.setdefault(budget, []).append(i)
    gens: list[str | None] = [None] * len(reqs)
    for n_new, idx in sorted(groups.items()):
        items = [{"id": reqs[i].id, "prompt": reqs[i].prompt} for i in idx]
        got = _run_cached(items, backend, cache, ("gen",), n_new, bar)["gen"]
        for i in idx:
            gens[i] = got[reqs[i].id]
    samples, tables = score_algorithmic(reqs, gens, algo.skipped)
    tables["config"] = algo.config
    return samples, tables


def format_results(results: dict) -> str:
    """The terminal report: Table-1 summary, per-task table, algorithmic tables."""
    parts = []
    if "icl" in results:
        parts += ["In-context learning (macro average over tasks; rank = highest log-likelihood label, "
                  "generation = greedy answer, exact match)", format_summary(results["icl"], SETTINGS), "",
                  "Per task (rank / generation accuracy %)", format_per_task(results["icl"])]  # fmt: skip
        skipped = {t: i["skipped"] for t, i in results["data"].items() if i["skipped"]}
        trimmed = {t: i["trimmed"] for t, i in results["data"].items() if i["trimmed"]}
        if skipped:
            parts.append(f"skipped: {json.dumps(skipped)}")
        if trimmed:
            parts.append(f"prompts with exemplars dropped to fit the context: {json.dumps(trimmed)}")
    if "algorithmic" in results:
        from .algorithmic import format_algorithmic_tables

        parts += ["", "Algorithmic reasoning (greedy generation; exact / parsed-list match %)", format_algorithmic_tables(results["algorithmic"])]
    t = results["timing"]
    parts.append(f"\n{t['queries']} queries in {t['seconds']}s ({t['resumed_from_cache']} cached results reused)")
    return "\n".join(parts)
