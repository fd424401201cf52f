"""BIG-bench `task.json` tasks (list_functions, simp_turing_concept) from a local directory or the hub.

Local layout, as in BIG-bench's `bigbench/benchmark_tasks/` (and ../shared/data/bigbench_sample):
`<root>/<task>/task.json` holds the task's name and description; a task with subtasks keeps each in
`<root>/<task>/<subtask>/task.json` with its own `examples`; a task without subtasks has `examples`
in the top-level file. The full tasks are in the PyPI sdist `bigbench==1.0.0`
(`pip download --no-deps --no-binary :all: bigbench==1.0.0`, then extract `*/benchmark_tasks/list_functions/*`
and `*/benchmark_tasks/simp_turing_concept/*`; never `pip install` it).

The hub copy (`tasksource/bigbench`) is the Hugging Face conversion: it keeps inputs and targets but drops
subtask names, descriptions and `comment`s, so it serves simp_turing_concept without the program-length
filter and cannot serve list_functions (whose exemplars must come from the query's own subtask).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

HUB_ID = "tasksource/bigbench"
TASKS = ("list_functions", "simp_turing_concept")


class BigBenchError(ValueError):
    """A BIG-bench task that cannot be found or read."""


@dataclass
class Subtask:
    """One BIG-bench (sub)task, or a generated one in the same shape."""

    task: str  # "list_functions", "simp_turing_concept", "gen_list", "gen_concept"
    name: str  # "c001", "witness_set", "gen_list/take-0"
    description: str
    examples: list[dict]  # {"input": str, "target": str, optional "comment": str}
    task_prefix: str | None = None
    source: str = ""  # file path, hub id or "generated"
    meta: dict = field(default_factory=dict)

    @property
    def rule(self) -> str:
        return rule_text(self.description)


_RULE = re.compile(r'The target function is "(.*)"\.?\s*$', re.S)


def rule_text(description: str) -> str:
    """The rule a list_functions description states ('... The target function is "X".' -> "X"), else the
    whole description."""
    m = _RULE.search(description)
    return m.group(1) if m else description.strip()


def find_bigbench_dir(data_dir: str | Path | None) -> Path | None:
    """The directory holding `list_functions/` or `simp_turing_concept/`: data_dir itself, or its
    `bigbench_sample/`, `bigbench/` or `bigbench/benchmark_tasks/` folder; None when there is none."""
    if data_dir is None:
        return None
    base = Path(data_dir)
    for cand in (base, base / "bigbench_sample", base / "bigbench", base / "bigbench" / "benchmark_tasks"):
        if any((cand / t / "task.json").is_file() for t in TASKS):
            return cand
    return None


def _read(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BigBenchError(f"cannot read BIG-bench task file {path}: {e}") from e


def _subtask(task: str, name: str, d: dict, path: Path) -> Subtask:
    examples = d.get("examples")
    if not isinstance(examples, list) or not examples:
        raise BigBenchError(f"{path}: no examples")
    bad = [i for i, e in enumerate(examples) if not isinstance(e.get("input"), str) or not isinstance(e.get("target"), str)]
    if bad:
        raise BigBenchError(f"{path}: examples {bad[:5]} lack a string input or target")
    prefix = d.get("task_prefix")
    return Subtask(task, name, d.get("description", ""), examples, prefix.strip() if prefix else None, str(path))


def load_local(task: str, root: str | Path) -> list[Subtask]:
    """All subtasks of `task` under `root` (see find_bigbench_dir), sorted by name."""
    top = Path(root) / task / "task.json"
    if not top.is_file():
        raise BigBenchError(f"no {task}/task.json under {root}")
    d = _read(top)
    if d.get("examples"):
        return [_subtask(task, task, d, top)]
    subs = sorted(p for p in top.parent.iterdir() if (p / "task.json").is_file())
    if not subs:
        raise BigBenchError(f"{top} has no examples and {top.parent} no subtask folders")
    return [_subtask(task, p.name, _read(p / "task.json"), p / "task.json") for p in subs]


def load_hub(task: str) -> list[Subtask]:
    """`task` from the hub (`tasksource/bigbench`), one Subtask per split, without comments."""
    if task == "list_functions":
        raise BigBenchError(
            f"{HUB_ID} has no subtask names for list_functions, so exemplars cannot be drawn from the query's "
            "own subtask; use a local copy (e.g. the bigbench sdist's benchmark_tasks) via --data-dir"
        )
    try:
        import datasets

        dd = datasets.load_dataset(HUB_ID, task)
    except Exception as e:  # offline, unknown config, hub errors: all mean "not available here"
        raise BigBenchError(
            f"cannot load {HUB_ID} config {task!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Offline, pass --data-dir with {task}/task.json (e.g. ../shared/data, which holds bigbench_sample)"
        ) from e
    out = []
    for split in dd:
        rows = [{"input": r["inputs"].lstrip("\n"), "target": r["targets"][0]} for r in dd[split] if r["targets"]]
        if rows:
            out.append(Subtask(task, f"hub-{split}", "", rows, None, f"{HUB_ID}:{task}:{split}"))
    if not out:
        raise BigBenchError(f"{HUB_ID} config {task!r} has no rows with targets")
    return out


def load_bigbench(task: str, data_dir: str | Path | None = None, *, hub: bool = False) -> list[Subtask]:
    """`task`'s subtasks from the local BIG-bench directory found under data_dir, else (hub=True) from
    the hub; raises BigBenchError saying where it looked."""
    if task not in TASKS:
        raise BigBenchError(f"unsupported BIG-bench task {task!r}; choose from {', '.join(TASKS)}")
    root = find_bigbench_dir(data_dir)
    if root is not None and (root / task / "task.json").is_file():
        return load_local(task, root)
    if hub:
        return load_hub(task)
    raise BigBenchError(f"no {task}/task.json under {data_dir} (nor its bigbench_sample/ or bigbench/ folders)")
