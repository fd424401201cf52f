"""Scoring generations on algorithmic tasks: exact match, and a parsed match beside it; the tables.

The answer is the generation's first line (generation stops at a newline; anything after one is ignored).
- **exact**: the answer equals the target after whitespace normalisation (strip, runs of whitespace -> one
  space), so " [1, 2] " matches "[1, 2]" but "[1,2]" does not.
- **parsed**: lists: the first bracketed list of integers in the answer equals the target's list
  ("[1,2]", "[1, 2] and more" match "[1, 2]"); binary strings: the first quoted string of 0s and 1s in the
  answer equals the target's (BIG-bench's output_regex for the task does the same).
- **malformed**: the answer holds no parseable list (no quoted binary string); counted, and wrong.
- **cut**: the answer opens a list ("[") or a quote and never closes it: generation ran out of budget,
  which is sized for the longest target of the subtask, so the answer was too long; wrong, and counted
  apart from malformed.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from ..metrics import pct
from ..results import AlgoResults, AlgoSetting, AlgoStats
from ..tables import format_table
from .categories import CATEGORIES
from .suite import PARTS, AlgoRequest

_LIST = re.compile(r"\[([^\[\]]*)\]")
_INT = re.compile(r"-?\d+")
_QUOTED = re.compile(r"'([01]*)'")


def answer_line(generation: str) -> str:
    return generation.lstrip(" \t").split("\n", 1)[0]


def normalize_ws(text: str) -> str:
    return " ".join(text.split())


def parse_int_list(text: str) -> list[int] | None:
    """The first "[...]" in text whose items are all integers, as a list; None if there is none."""
    for m in _LIST.finditer(text):
        inner = m.group(1).strip()
        if not inner:
            return []
        items = [p.strip() for p in inner.split(",")]
        if all(_INT.fullmatch(p) for p in items):
            return [int(p) for p in items]
    return None


def parse_bits(text: str) -> str | None:
    m = _QUOTED.search(text)
    return m.group(1) if m else None


def score_generation(kind: str, generation: str, target: str) -> dict:
    """{"answer", "exact", "parsed", "malformed", "cut"} for one generation; kind is "list" or "bits"."""
    answer = answer_line(generation if isinstance(generation, str) else "")
    exact = normalize_ws(answer) == normalize_ws(target)
    if kind == "list":
        got, want = parse_int_list(answer), parse_int_list(target)
    elif kind == "bits":
        got, want = parse_bits(answer), parse_bits(target)
    else:
        raise ValueError(f"unknown answer kind {kind!r}")
    if want is None:
        raise ValueError(f"target {target!r} is not a well-formed {kind} answer")
    opener, closer = ("[", "]") if kind == "list" else ("'", "'")
    body = answer.strip()
    cut = got is None and body.startswith(opener) and closer not in body[1:]
    return {"answer": answer, "exact": exact, "parsed": got is not None and got == want, "malformed": got is None and not cut,
            "cut": cut}  # fmt: skip


def summarize(rows: Iterable[dict]) -> AlgoStats:
    """Counts and accuracies over scored rows: n, exact, parsed, malformed, cut, exact_acc, parsed_acc."""
    n = exact = parsed = malformed = cut = 0
    for r in rows:
        n += 1
        exact += r["exact"]
        parsed += r["parsed"]
        malformed += r["malformed"]
        cut += r.get("cut", False)  # samples written before `cut` existed lack it
    return AlgoStats(n=n, exact=exact, parsed=parsed, malformed=malformed, cut=cut,
                     exact_acc=exact / n if n else None, parsed_acc=parsed / n if n else None)


def score_algorithmic(
    requests: Sequence[AlgoRequest], generations: Sequence[str], skipped: dict[str, str] | None = None
) -> tuple[list[dict], AlgoResults]:
    """(samples, tables) for generations aligned with requests.

    samples: one dict per request (id, part, subtask, category, setting, rule, prompt_sha256, target,
    generation, answer, exact, parsed, malformed, cut, meta). tables: per part and setting, the overall,
    per-category and per-subtask AlgoStats (results.AlgoResults), and the parts skipped with their reason.
    """
    if len(requests) != len(generations):
        raise ValueError(f"{len(generations)} generations for {len(requests)} requests")
    samples = []
    for r, g in zip(requests, generations):
        s = score_generation(r.kind, g, r.target)
        samples.append(
            {
                "id": r.id, "part": r.part, "subtask": r.subtask, "category": r.category, "setting": r.setting,
                "rule": r.rule, "prompt_sha256": hashlib.sha256(r.prompt.encode()).hexdigest(), "target": r.target,
                "generation": g, **s, "meta": r.meta,
            }
        )  # fmt: skip
    groups: dict = defaultdict(lambda: defaultdict(lambda: {"overall": [], "categories": defaultdict(list), "subtasks": defaultdict(list)}))
    for s in samples:
        g = groups[s["part"]][s["setting"]]
        g["overall"].append(s)
        g["categories"][s["category"]].append(s)
        g["subtasks"][s["subtask"]].append(s)

    def cat_key(c: str):
        return (CATEGORIES.index(c), c) if c in CATEGORIES else (len(CATEGORIES), c)

    parts = {}
    for part in sorted(groups, key=PARTS.index):
        parts[part] = {
            setting: AlgoSetting(
                overall=summarize(g["overall"]),
                categories={c: summarize(g["categories"][c]) for c in sorted(g["categories"], key=cat_key)},
                subtasks={n: summarize(v) for n, v in sorted(g["subtasks"].items())},
            )
            for setting, g in groups[part].items()
        }
    return samples, AlgoResults(parts, dict(skipped or {}))


def format_algorithmic_tables(tables: AlgoResults, subtasks: bool = False) -> str:
    """Plain-text tables: per part, categories (and overall) x settings, exact / parsed accuracy (%), n;
    per-subtask rows too when subtasks=True; skipped parts with their reasons."""
    blocks = []
    for part, by_setting in tables.parts.items():
        settings = list(by_setting)
        names: list[str] = []
        for s in settings:
            names += [c for c in by_setting[s].categories if c not in names]

        def row(label, pick, settings=settings, by_setting=by_setting):
            cells = [label]
            for s in settings:
                st = pick(by_setting[s])
                cells += [pct(st.exact_acc), pct(st.parsed_acc), str(st.n)] if st else ["-", "-", "0"]
            return cells

        rows = [row(c, lambda t, c=c: t.categories.get(c)) for c in names]
        rows.append(row("overall", lambda t: t.overall))
        if subtasks:
            subs = sorted({n for s in settings for n in by_setting[s].subtasks})
            rows += [row(f"  {n}", lambda t, n=n: t.subtasks.get(n)) for n in subs]
        header = [part] + [h for s in settings for h in (f"{s} exact", "parsed", "n")]
        mal = ", ".join(f"{s}: {by_setting[s].overall.malformed}" for s in settings)
        cut = ", ".join(f"{s}: {by_setting[s].overall.cut}" for s in settings)
        blocks.append(format_table(header, rows) + f"\nmalformed answers: {mal}; cut at the budget: {cut}")
    blocks += [f"skipped {part}: {why}" for part, why in tables.skipped.items()]
    return "\n\n".join(blocks)
