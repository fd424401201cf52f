"""What an evaluation will ask, planned from its config before any model runs.

Every ICL item (trial x task x setting x query: its prompt, label candidates and gold) and the algorithmic
requests. `symtune eval` scores the plan, `symtune export` writes it for lm-eval, and `symtune run` sizes its
time estimate by its prompt tokens. Planning needs only a token counter (a backend, or `TokenCounter` around
a tokenizer), so the same plan comes out with or without a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .episodes import (
    SETTINGS,
    BudgetError,
    draw_episode,
    draw_shared_episodes,
    exact_measure,
    fit_budget,
    prepare_task,
    query_order,
    render,
)
from .results import TaskReport
from .symbols import SymbolPool
from .tasks import load_catalogue, select_tasks

if TYPE_CHECKING:
    from .evaluate import EvalConfig


class TokenCounter:
    """What planning needs from a backend, from a tokenizer alone (for `symtune export` without a model)."""

    def __init__(self, tokenizer, max_length: int = 2048):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.identity = {"tokenizer": getattr(tokenizer, "name_or_path", "")}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)


def plan_icl(config: EvalConfig, backend) -> tuple[list[dict], dict]:
    """Every (trial, task, setting, query) item with its prompt and candidates, and a report per task
    (data identity, skips, exemplar trims)."""
    catalogue = load_catalogue(config.data_dir)
    specs = select_tasks(catalogue, config.tasks, role=None if config.tasks else "eval", data_dir=config.data_dir)
    if not specs:
        from .evaluate import EvalError

        raise EvalError(f"no evaluation tasks available (data dir: {config.data_dir}); pass --data-dir or --tasks")
    pool = SymbolPool(config.symbols)
    budget = min(config.max_tokens or 2048, backend.max_length) - config.max_new_tokens
    n_queries = min(config.limit or config.max_queries, config.max_queries)
    items, report = [], {}
    for spec in specs:
        task = prepare_task(spec, config.data_dir, purpose="eval")
        measure = exact_measure(task, backend.count_tokens)
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
                    prompt, completion = render(task, fitted)
                    labels = [fitted.mapping[x] for x in spec.labels]
                    items.append({
                        "id": f"{spec.name}/{setting}/{trial}/{q}", "task": spec.name, "setting": setting, "trial": trial,
                        "query": q, "prompt": prompt, "labels": labels, "gold": completion[1:],
                        "n_exemplars": len(fitted.exemplars),
                    })  # fmt: skip
        report[spec.name] = info
    return items, report


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
