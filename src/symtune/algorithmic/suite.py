"""The algorithmic suite: every query to ask, and its generation budgets (scoring and tables: `score.py`).

Parts:
- `list_functions` (BIG-bench): each subtask k-shot (default 4) with exemplars from its own 32 pairs,
  never the query nor a pair with the query's input; rendered in an episode format (default
  `Input: / Output:`), with the subtask's `task_prefix` as the instruction in "natural+instr" and without
  it in "natural". The symbol and flipped settings do not apply: the outputs are computed lists, not labels.
- `simp_turing_concept` (BIG-bench): each example's input already holds its shots; asked as is, once
  (setting "natural"); concepts with programs longer than `max_program_length` are left out.
- `gen_list`, `gen_concept`: generated tasks, `generated_per_family` per family, asked like the
  BIG-bench part of the same shape.

Every draw is seeded by a string naming (seed, part/subtask, row[, purpose]), as episodes are, so it does
not depend on --limit, the order of work or PYTHONHASHSEED; `limit` takes a prefix of each subtask's
seeded query order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..episodes import get_setting, seeded_order
from ..formats import get_format, render_prompt
from .bigbench import BigBenchError, Subtask, load_bigbench
from .categories import categorize, check_categories
from .concepts import CONCEPT_FAMILIES, ConceptError, generate_concept_task, parse_comment, program_length
from .list_functions import FAMILIES, generate_list_task

PARTS = ("list_functions", "simp_turing_concept", "gen_list", "gen_concept")
LIST_SETTINGS = ("natural+instr", "natural")
CONCEPT_SETTING = "natural"
STOP = ["\n"]
BUDGET_SLACK = 8  # generation budget: the subtask's longest target in characters + this many tokens


@dataclass
class AlgoRequest:
    id: str  # "<part>/<subtask or set>/<row>/<setting>", stable across runs and --limit
    part: str
    subtask: str  # cNNN, a concept's P3 program, or a generated task's name
    category: str  # a categories.CATEGORIES name; "length N" for simp_turing_concept
    setting: str
    prompt: str
    target: str  # the completion is " " + target
    kind: str  # "list" or "bits": how the answer is parsed
    max_new_tokens: int
    rule: str  # the rule in words (list functions, generated tasks) or the P3 program
    meta: dict = field(default_factory=dict)
    longest_target: str = ""  # the longest target of the subtask (or set): what the budgets are sized for


@dataclass
class AlgoPlan:
    requests: list[AlgoRequest]
    skipped: dict[str, str]  # part -> why it has no requests
    config: dict  # the resolved arguments, for results files


def _longest(sub: Subtask) -> str:
    return max((e["target"] for e in sub.examples), key=len)


def _keep(sub_names: Sequence[str], wanted: set[str] | None) -> bool:
    return wanted is None or any(n in wanted for n in sub_names)


def list_requests(
    part: str,
    sub: Subtask,
    category: str,
    *,
    seed: int,
    limit: int | None,
    shots: int,
    fmt: str,
    settings: Sequence[str],
    trial: int = 0,
) -> list[AlgoRequest]:
    """k-shot requests for a list subtask: exemplars from its own pairs, never the query's row or input."""
    key = f"{part}/{sub.name}"
    inputs = [e["input"] for e in sub.examples]
    longest, form = _longest(sub), get_format(fmt)
    out = []
    for q in seeded_order(seed, key, len(inputs), limit):
        candidates = [i for i in range(len(inputs)) if i != q and inputs[i] != inputs[q]]
        rng = random.Random(f"{seed}:{trial}:{key}:{q}:exemplars")
        chosen = rng.sample(candidates, min(shots, len(candidates)))
        exemplars = [(inputs[i], sub.examples[i]["target"]) for i in chosen]
        for name in settings:
            instruction = sub.task_prefix if get_setting(name).instruction else None
            out.append(
                AlgoRequest(
                    f"{key}/{q}/{name}",
                    part,
                    sub.name,
                    category,
                    name,
                    render_prompt(form, exemplars, inputs[q], instruction),
                    sub.examples[q]["target"],
                    "list",
                    len(longest) + BUDGET_SLACK,
                    sub.rule,
                    {"row": q, "exemplars": chosen, "format": fmt, "trial": trial, **sub.meta},
                    longest,
                )
            )
    return out


def concept_requests(
    part: str,
    sub: Subtask,
    *,
    seed: int,
    limit: int | None,
    max_program_length: int | None,
    wanted: set[str] | None,
    categories: tuple[str, ...] | None,
) -> list[AlgoRequest]:
    """Requests for a set of pre-shotted binary-string prompts (BIG-bench's or generated); simp_turing_concept
    rows are filtered (program length, subtasks, categories) before the seeded order and `limit` apply."""
    key = f"{part}/{sub.name}"
    rows: dict[int, tuple[str, str, str, dict]] = {}
    for q, ex in enumerate(sub.examples):
        if part == "simp_turing_concept" and "comment" not in ex:  # the hub copy: no program, no length
            rows[q] = (sub.name, "length unknown", "", {"set": sub.name})
        elif part == "simp_turing_concept":
            program, stated = parse_comment(ex["comment"])
            length = program_length(program)
            if max_program_length is not None and length > max_program_length:
                continue
            if categories is not None or not _keep((program, sub.name), wanted):
                continue
            meta = {"set": sub.name, "program_length": length, "stated_length": stated}
            rows[q] = (program, f"length {length}", program, meta)
        else:
            rows[q] = (sub.name, sub.meta["category"], sub.meta["rule"], dict(sub.meta))
    eligible = sorted(rows)
    longest, out = _longest(sub), []
    for j in seeded_order(seed, key, len(eligible), limit):
        q = eligible[j]
        name, category, rule, meta = rows[q]
        ex = sub.examples[q]
        out.append(AlgoRequest(f"{key}/{q}/{CONCEPT_SETTING}", part, name, category, CONCEPT_SETTING,
                               ex["input"], ex["target"], "bits", len(longest) + BUDGET_SLACK, rule,
                               {**meta, "row": q}, longest))  # fmt: skip
    return out


def build_algorithmic_requests(
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    limit: int | None = None,
    shots: int = 4,
    parts: Sequence[str] = PARTS,
    subtasks: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    generated_per_family: int = 1,
    families: Sequence[str] | None = None,
    concept_families: Sequence[str] | None = None,
    max_program_length: int | None = 3,
    fmt: str = "input_output",
    settings: Sequence[str] = LIST_SETTINGS,
    trial: int = 0,
    hub: bool = False,
) -> AlgoPlan:
    """Every query of the algorithmic suite, in a fixed order (part, subtask, seeded query order, setting).

    subtasks: keep only these list_functions subtasks ("c001"), concept programs ("+o") or sets
    ("witness_set"), generated tasks ("take-0") or families ("take"). categories: keep only these
    categories (simp_turing_concept, grouped by program length instead, is then left out). BIG-bench parts
    without data (no local copy under data_dir; hub=True also tries the hub) are skipped, with the reason
    in `skipped`; a part asked for by name that is unknown raises ValueError.
    """
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown algorithmic part(s) {bad}; choose from {', '.join(PARTS)}")
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    for name in settings:
        if get_setting(name).labels != "natural":
            raise ValueError(
                f"setting {name!r} does not apply to algorithmic tasks (their outputs are computed, not labels); "
                f"use {' or '.join(LIST_SETTINGS)}"
            )
    get_format(fmt)
    cats = check_categories(categories) if categories is not None else None
    wanted = set(subtasks) if subtasks is not None else None
    fams = list(families) if families is not None else list(FAMILIES)
    cfams = list(concept_families) if concept_families is not None else list(CONCEPT_FAMILIES)
    for f in fams:
        if f not in FAMILIES:
            raise ValueError(f"unknown list-function family {f!r}; choose from {', '.join(FAMILIES)}")
    for f in cfams:
        if f not in CONCEPT_FAMILIES:
            raise ValueError(f"unknown concept family {f!r}; choose from {', '.join(CONCEPT_FAMILIES)}")
    common = {"seed": seed, "limit": limit}
    requests: list[AlgoRequest] = []
    skipped: dict[str, str] = {}

    def list_part(part: str, subs: list[Subtask], category_of: Callable[[Subtask], str]) -> None:
        for sub in subs:
            cat = category_of(sub)
            if cats is not None and cat not in cats:
                continue
            if not _keep((sub.name, sub.meta.get("family", "")), wanted):
                continue
            requests.extend(list_requests(part, sub, cat, shots=shots, fmt=fmt, settings=settings, trial=trial, **common))

    if "list_functions" in parts:
        try:
            subs = [s for s in load_bigbench("list_functions", data_dir, hub=hub) if s.name[:1] == "c" and s.name[1:].isdigit()]
            if not subs:
                raise BigBenchError("no cNNN subtasks")
            list_part("list_functions", subs, lambda s: categorize(s.rule))
        except BigBenchError as e:
            skipped["list_functions"] = str(e)
    if "simp_turing_concept" in parts:
        try:
            subs = load_bigbench("simp_turing_concept", data_dir, hub=hub)
            if max_program_length is not None and any("comment" not in e for s in subs for e in s.examples):
                raise BigBenchError(
                    "examples without a `comment` (the hub copy drops it) cannot be filtered by program length; "
                    "use a local copy or max_program_length=None"
                )
            for sub in subs:
                requests.extend(concept_requests("simp_turing_concept", sub, max_program_length=max_program_length,
                                                 wanted=wanted, categories=cats, **common))  # fmt: skip
        except (BigBenchError, ConceptError) as e:
            skipped["simp_turing_concept"] = str(e)
    if "gen_list" in parts:
        subs = [generate_list_task(f, seed, i) for f in fams for i in range(generated_per_family)]
        list_part("gen_list", subs, lambda s: s.meta["category"])
    if "gen_concept" in parts:
        for f in cfams:
            for i in range(generated_per_family):
                sub = generate_concept_task(f, seed, i, shots=shots)
                if (cats is None or sub.meta["category"] in cats) and _keep((sub.name, f), wanted):
                    requests.extend(concept_requests("gen_concept", sub, max_program_length=None, wanted=None,
                                                     categories=None, **common))  # fmt: skip
    for part in parts:
        if part not in skipped and not any(r.part == part for r in requests):
            skipped[part] = "no queries match the filters"
    config = {
        "seed": seed, "trial": trial, "limit": limit, "shots": shots, "parts": list(parts),
        "subtasks": sorted(wanted) if wanted is not None else None, "categories": list(cats) if cats else None,
        "generated_per_family": generated_per_family, "families": fams, "concept_families": cfams,
        "max_program_length": max_program_length, "format": fmt, "settings": list(settings), "hub": hub,
        "data_dir": str(data_dir) if data_dir is not None else None,
    }  # fmt: skip
    return AlgoPlan(requests, skipped, config)


def token_budgets(requests: Sequence[AlgoRequest], count_tokens: Callable[[str], int]) -> list[int]:
    """Generation budgets in the model's own tokens: the token count of the longest target of the request's
    subtask (with its leading space) + 2, never above the request's character-based budget. A correct
    answer always fits, so the budget changes the cost of a run, not its scores; an answer cut at the budget
    is longer than every target of its subtask (scored wrong, counted as `cut`)."""
    n: dict[str, int] = {}
    for r in requests:
        if r.longest_target not in n:
            n[r.longest_target] = count_tokens(" " + r.longest_target)
    return [min(r.max_new_tokens, n[r.longest_target] + 2) for r in requests]
