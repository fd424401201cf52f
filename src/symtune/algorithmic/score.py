"""Scoring generations on algorithmic tasks: exact match, and a parsed match beside it.

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

import re
from collections.abc import Iterable

from ..results import AlgoStats

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
