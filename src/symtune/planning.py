"""What an evaluation will ask, planned from its config before any model runs.

Every ICL item (trial x task x setting x query: its prompt, label candidates and gold) and the algorithmic
requests. `symtune eval` scores the plan, `symtune export` writes it for lm-eval, and `symtune run` sizes its
time estimate by its prompt tokens. Planning needs only a token counter (a backend, or `TokenCounter` around
a tokenizer), so the same plan comes out with or without a model.

The config it is planned from, `EvalConfig` (what to evaluate and how), is here too, below the evaluation
that scores the plan; `symtune.evaluate` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .episodes import (
    EVAL_SETTINGS,
    SETTINGS,
    BudgetError,
    draw_episode,
    draw_shared_episodes,
    exact_measure,
    fit_budget,
    get_setting,
    prepare_task,
    query_order,
    render,
)
from .flags import option
from .formats import DEFAULT_EVAL_FORMAT, PROMPT_FORMATS, STOP, ChatTemplate, get_format
from .models import resolve_dtype
from .results import TaskReport
from .symbols import SymbolPool
from .tasks import load_catalogue, select_tasks

SUITES = ("paper", "icl", "algorithmic")
EXEMPLAR_PROTOCOLS = ("per-query", "shared")
SYMBOL_POOLS = ("heldout", "tune")
DTYPES = ("float32", "bfloat16", "float16", "auto")


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
    generation. prompt_format: plain (the paper's text prompts) or chat (the model's chat template, exemplars
    as turns). out: the output directory (results.json, samples.jsonl, cache.jsonl).
    """

    model: str = option("smollm2-135m", "alias (smollm2-135m, gemma3-270m), hub id, local dir or .gguf file")
    out: str = option("runs/eval", "output directory (results.json, samples.jsonl, cache files)")
    adapter: str | None = option(None, "PEFT adapter directory")
    server: str | None = option(None, "OpenAI-compatible completions server URL (vLLM, TGI, llama.cpp)")
    api_key: str | None = option(None, "the server's API key")
    dtype: str = option("float32", "auto: bfloat16 where it is native (CUDA bf16, a CPU with AVX512-BF16/AMX), else "
                                   "float32", choices=DTYPES)
    device: str = option("cpu", "torch device (cpu, cuda, cuda:1, ...)")
    batch_size: int = option(8, "prompts per scoring batch (the packed engine plans by tokens)")
    suite: str = option("paper", "paper: the 11 held-out tasks in every setting + the algorithmic suite; icl: the "
                                 "tasks only; algorithmic", choices=SUITES)
    tasks: list[str] | None = option(None, "evaluation tasks (default: the 11 held-out tasks)")
    settings: list[str] = option(list(EVAL_SETTINGS), "prompt settings", choices=EVAL_SETTINGS)
    data_dir: str | None = option(None, "local data directory (holds tasks/<name>/{task.json,<split>.jsonl}; "
                                        "default: the hub)")
    max_queries: int = option(100, "queries per task (the paper: 100)")
    limit: int | None = option(None, "evaluate only the first N of each task's queries (the same seeded order)")
    k: int = option(4, "exemplars per class")
    seed: int = option(0, "seed of the query order and the exemplar draws")
    trials: int = option(1, "independent exemplar draws (error bars)")
    exemplars: str = option("per-query", "per-query: each query its own exemplar draw (the paper); shared: one draw per "
                                         "task and trial for every query (HELM's; its prefix is scored once: many "
                                         "times cheaper)", choices=EXEMPLAR_PROTOCOLS)
    symbols: str = option("heldout", "symbol pool of the symbol settings: heldout (the paper's; always for results) or "
                                     "tune (a diagnostic: does a tuned model read mappings made of the symbols it was "
                                     "tuned on?)", choices=SYMBOL_POOLS)
    fmt: str = option(DEFAULT_EVAL_FORMAT, "input-label format", flag="format")
    prompt_format: str = option("plain", "plain: the paper's text prompts; chat: the episode as a conversation in "
                                         "the model's chat template (exemplars as user/assistant turns)",
                                choices=PROMPT_FORMATS)
    max_tokens: int | None = option(None, "prompt budget (default: the model's context, at most 2048)")
    generate: bool = option(True, "also score greedy generation (--no-generate: rank classification only)")
    max_new_tokens: int = option(8, "greedy tokens generated per query")
    algorithmic: dict = field(default_factory=dict)  # arguments of build_algorithmic_requests (limit, settings, ...)

    def __post_init__(self):
        self.dtype = resolve_dtype(self.dtype, self.device)  # "auto" is recorded as what it chose on this machine
        if self.exemplars not in EXEMPLAR_PROTOCOLS:
            raise EvalError(f"unknown exemplar protocol {self.exemplars!r}; choose from {', '.join(EXEMPLAR_PROTOCOLS)}")
        if self.symbols not in SYMBOL_POOLS:
            raise EvalError(f"unknown symbol pool {self.symbols!r}; choose heldout (the default) or tune")
        if self.suite not in SUITES:
            raise EvalError(f"unknown suite {self.suite!r}; choose from {', '.join(SUITES)}")
        for s in self.settings:
            get_setting(s)
        get_format(self.fmt)
        if self.prompt_format not in PROMPT_FORMATS:
            raise EvalError(f"unknown prompt format {self.prompt_format!r}; choose plain (the default) or chat")
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
        return len(self.token_ids(text))

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids


def plan_icl(config: EvalConfig, backend) -> tuple[list[dict], dict]:
    """Every (trial, task, setting, query) item with its prompt, labels, candidates (each label as it follows the
    prompt), stop strings and gold, and a report per task (data identity, skips, exemplar trims)."""
    catalogue = load_catalogue(config.data_dir)
    specs = select_tasks(catalogue, config.tasks, role=None if config.tasks else "eval", data_dir=config.data_dir)
    if not specs:
        raise EvalError(f"no evaluation tasks available (data dir: {config.data_dir}); pass --data-dir or --tasks")
    pool = SymbolPool(config.symbols)
    chat = chat_template(config, backend) if config.prompt_format == "chat" else None
    lead = "" if chat else " "  # how a label follows the prompt: after a space, or as the assistant's reply
    stop = [*STOP, chat.end_of_turn] if chat else STOP
    budget = min(config.max_tokens or 2048, backend.max_length) - config.max_new_tokens
    n_queries = min(config.limit or config.max_queries, config.max_queries)
    items, report = [], {}
    for spec in specs:
        task = prepare_task(spec, config.data_dir, purpose="eval")
        measure = exact_measure(task, backend.count_tokens, chat)
        info = TaskReport(labels=len(spec.labels), query_split=task.query_split, exemplar_split=task.exemplar_split,
                          sources=task.sources, sha256=task.sha256, skipped=dict(task.skipped),
                          spec_sha256=spec.content_sha256)  # fmt: skip
        if len(task.queries) < n_queries:
            info.note = f"only {len(task.queries)} queries available"
        for trial in range(config.trials):
            for setting in config.settings:
                if SETTINGS[setting].labels == "flipped" and not spec.binary:
                    continue
                if config.exemplars == "shared":
                    episodes = draw_shared_episodes(task, n_queries, seed=config.seed, setting=setting, k=config.k,
                                                    pool=pool, fmt=config.fmt, trial=trial, max_queries=config.max_queries)
                else:
                    episodes = [draw_episode(task, q, seed=config.seed, setting=setting, k=config.k, pool=pool,
                                             fmt=config.fmt, trial=trial) for q in query_order(task, config.seed, n_queries)]
                for ep in episodes:
                    q = ep.query
                    try:
                        fitted = fit_budget(task, ep, measure, budget)
                    except BudgetError:
                        info.skipped["over the model's context"] = info.skipped.get("over the model's context", 0) + 1
                        continue
                    info.trimmed += fitted is not ep
                    prompt, completion = render(task, fitted, chat)
                    labels = [fitted.mapping[x] for x in spec.labels]
                    items.append({
                        "id": f"{spec.name}/{setting}/{trial}/{q}", "task": spec.name, "setting": setting, "trial": trial,
                        "query": q, "prompt": prompt, "labels": labels, "gold": completion[len(lead):],
                        "candidates": [lead + x for x in labels], "stop": stop, "n_exemplars": len(fitted.exemplars),
                    })  # fmt: skip
        report[spec.name] = info
    return items, report


def chat_template(config: EvalConfig, backend) -> ChatTemplate:
    """The model's chat template, from the backend's tokenizer (a server backend has none here)."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise EvalError(f"--prompt-format chat needs the tokenizer of {config.model!r} (its chat template) and the "
                        f"{type(backend).__name__} backend has none; use --prompt-format plain")
    return ChatTemplate(tokenizer, config.model)


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


def plan_tokens(config: EvalConfig, counter: TokenCounter) -> int:
    """The prompt tokens an evaluation forwards: its size for `symtune run`'s time estimate. The scoring engine
    forwards a prefix that several prompts begin with once (with shared exemplars, most of every prompt), so
    each distinct prefix counts once: the number of nodes of the prompts' token trie."""
    items, _, algo = plan_evaluation(config, counter)
    prompts = [it["prompt"] for it in items] + [r.prompt for r in (algo.requests if algo else [])]
    trie: dict[tuple[int, int], int] = {}
    for p in prompts:
        node = 0
        for token in counter.token_ids(p):
            node = trie.setdefault((node, token), len(trie) + 1)
    return len(trie)
