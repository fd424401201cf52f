"""Which answers a model gives outside the label set, and on which tasks.

Generation accuracy counts such answers as wrong; this section says what they are. A tuned model that answers
new tasks with labels of its tuning tasks ("not entailment" to a task whose labels are "not potentially unfair" /
"potentially unfair") shows here first, long before its accuracy says why it fell.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from ..scoring.rules import normalize_answer
from .runs import Run

TOP = 8  # answers listed per model
MAX_CHARS = 40  # of each answer shown


def outside_label_set(run: Run, top: int = TOP) -> list[tuple]:
    """The most frequent answers outside the label set (normalised as generation accuracy matches them), per model,
    with their share of the model's generated answers and the tasks they were given on."""
    rows = []
    for e in run.evaluations:
        answered = [s for s in e.samples or [] if "task" in s and s.get("in_label_set") is not None]  # generated
        tasks: dict[str, Counter] = defaultdict(Counter)  # answer -> task -> count
        for s in answered:
            if not s["in_label_set"]:
                tasks[normalize_answer(s["generation"])][s["task"]] += 1
        counts = {answer: sum(by.values()) for answer, by in tasks.items()}
        for answer, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
            shown = answer if len(answer) <= MAX_CHARS else answer[:MAX_CHARS] + "…"
            where = sorted(tasks[answer].items(), key=lambda kv: (-kv[1], kv[0]))
            rows.append([e.label, _code(shown) if shown else "(empty)", str(n), f"{100 * n / len(answered):.1f}",
                         ", ".join(f"{t} ({k})" for t, k in where[:3]) + (f", +{len(where) - 3} more" if len(where) > 3 else "")])  # fmt: skip
    if not rows:
        return []
    return [("h", 2, "Answers outside the label set"),
            ("p", f"The {top} most frequent generated answers that name no label of their task (after the normalisation "
                  "generation accuracy uses), per model, with their share of all its generated answers (every setting) "
                  "and the tasks they were given on. Labels of the tuning tasks appearing here mean the tuned model "
                  "carries its tuning tasks' answers into new tasks."),
            ("table", ["model", "answer", "count", "% of answers", "tasks (count)"], rows)]  # fmt: skip


def _code(text: str) -> str:
    """A markdown code span that holds any text, backticks included (a fence longer than any run inside)."""
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
