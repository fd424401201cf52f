"""Episodes: exemplars + query + label->surface mapping, drawn reproducibly, and the prompt settings.

Every random choice of an episode comes from a `random.Random` seeded with a string naming
(seed, trial, task, query row, purpose), so a draw depends on nothing else: not on --limit, the order of
work, batch size, number of processes or PYTHONHASHSEED.

Longer than our ~300-line guide on purpose: it is the one place where the draws of a prompt are made, for
tuning mixtures, evaluation (per-query and shared exemplars) and the lm-eval export alike, so their random
streams cannot drift apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .formats import DEFAULT_EVAL_FORMAT, FORMATS, ChatTemplate, get_format, render_input, render_prompt
from .symbols import SymbolPool
from .tasks import TaskError, TaskSpec, available_splits, load_rows


@dataclass(frozen=True)
class Setting:
    name: str
    instruction: bool
    labels: str  # "natural", "symbol" or "flipped"


SETTINGS = {
    s.name: s
    for s in (
        Setting("natural+instr", True, "natural"),  # relevant labels ✓, instruction ✓
        Setting("natural", False, "natural"),  # relevant labels ✓, instruction ✗
        Setting("symbol+instr", True, "symbol"),  # relevant labels ✗, instruction ✓
        Setting("symbol", False, "symbol"),  # relevant labels ✗, instruction ✗
        Setting("flipped", False, "flipped"),  # binary tasks: natural labels swapped, exemplars and query
    )
}
EVAL_SETTINGS = ("natural+instr", "natural", "symbol+instr", "symbol", "flipped")


class EpisodeError(ValueError):
    """An episode that cannot be built as asked (e.g. a class without exemplars)."""


class BudgetError(EpisodeError):
    """The prompt does not fit the token budget even with one exemplar per class."""


def get_setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise EpisodeError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}") from None


@dataclass
class TaskData:
    """A task's query rows and exemplar rows, with inputs rendered once."""

    spec: TaskSpec
    query_split: str
    exemplar_split: str
    queries: list[dict]
    exemplars: list[dict]
    query_inputs: list[str]
    exemplar_inputs: list[str]
    by_class: dict[str, list[int]]  # label -> indexes into exemplars
    sources: dict[str, str] = field(default_factory=dict)  # split -> file/hub id
    sha256: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def same_split(self) -> bool:
        return self.query_split == self.exemplar_split


def prepare_task(
    spec: TaskSpec,
    data_dir: str | Path | None = None,
    purpose: str = "eval",
    query_split: str | None = None,
    exemplar_split: str | None = None,
) -> TaskData:
    """Load a task for evaluation (queries from test, else validation, else train; exemplars from train)
    or for tuning (queries and exemplars from train)."""
    splits = available_splits(spec, data_dir)
    if not splits:
        raise TaskError(f"task {spec.name!r} has no data (no local files under {data_dir}, no hub source)")
    if "train" not in splits:
        raise TaskError(f"task {spec.name!r} has no train split to draw exemplars from (has {splits})")
    exemplar_split = exemplar_split or "train"
    if query_split is None:
        query_split = "train" if purpose == "tune" else next(s for s in ("test", "validation", "train") if s in splits)
    q_rows = load_rows(spec, query_split, data_dir)
    e_rows = load_rows(spec, exemplar_split, data_dir)
    by_class: dict[str, list[int]] = {label: [] for label in spec.labels}
    for i, r in enumerate(e_rows.rows):
        by_class[r["label"]].append(i)
    empty = [label for label, idx in by_class.items() if not idx]
    if len(empty) == len(spec.labels) - 1:
        raise TaskError(f"task {spec.name!r}: the {exemplar_split} split has only one class ({e_rows.source})")
    if empty:
        raise TaskError(f"task {spec.name!r}: no {exemplar_split} rows with label(s) {empty} ({e_rows.source})")

    def render(rows):
        return [render_input(r, spec.input_fields, spec.input_template) for r in rows]

    query_inputs = render(q_rows.rows)
    skipped = {f"{query_split}: {k}": v for k, v in q_rows.skipped.items()}
    if exemplar_split != query_split:
        skipped.update({f"{exemplar_split}: {k}": v for k, v in e_rows.skipped.items()})
    return TaskData(
        spec=spec,
        query_split=query_split,
        exemplar_split=exemplar_split,
        queries=q_rows.rows,
        exemplars=e_rows.rows,
        query_inputs=query_inputs,
        exemplar_inputs=query_inputs if exemplar_split == query_split else render(e_rows.rows),
        by_class=by_class,
        sources={query_split: q_rows.source, exemplar_split: e_rows.source},
        sha256={query_split: q_rows.sha256, exemplar_split: e_rows.sha256},
        skipped=skipped,
    )


def seeded_order(seed: int, key: str, n: int, limit: int | None = None) -> list[int]:
    """range(n) in an order fixed by (seed, key); `limit` takes a prefix, so a smaller limit gives a subset.
    Every query order (tasks, BIG-bench subtasks, generated tasks) is drawn here."""
    order = list(range(n))
    random.Random(f"{seed}:{key}:query-order").shuffle(order)
    return order if limit is None else order[:limit]


def query_order(task: TaskData, seed: int, limit: int | None = None) -> list[int]:
    """The task's query rows in a seeded order (see seeded_order)."""
    return seeded_order(seed, task.spec.name, len(task.queries), limit)


@dataclass(frozen=True)
class Episode:
    task: str
    query: int  # row index in the query split
    exemplars: tuple[int, ...]  # row indexes in the exemplar split, in prompt order
    mapping: dict[str, str]  # natural label -> the surface shown in the prompt
    format: str
    instruction: str | None
    setting: str

    def gold(self, task: TaskData) -> str:
        return self.mapping[task.queries[self.query]["label"]]

    def counts(self, task: TaskData) -> dict[str, int]:
        out = dict.fromkeys(task.spec.labels, 0)
        for i in self.exemplars:
            out[task.exemplars[i]["label"]] += 1
        return out


def label_mapping(spec: TaskSpec, setting: Setting, rng: random.Random, pool: SymbolPool | None) -> dict[str, str]:
    if setting.labels == "natural":
        return {label: label for label in spec.labels}
    if setting.labels == "flipped":
        if not spec.binary:
            raise EpisodeError(f"flipped labels need a binary task; {spec.name!r} has {len(spec.labels)} labels")
        a, b = spec.labels
        return {a: b, b: a}
    if pool is None:
        raise EpisodeError(f"setting {setting.name!r} needs a symbol pool")
    # A symbol equal to a natural label of the task would leak the label's meaning: avoid it.
    return dict(zip(spec.labels, pool.sample(len(spec.labels), rng, avoid=_label_forms(spec.labels))))


@cache
def _label_forms(labels: tuple[str, ...]) -> frozenset[str]:
    return frozenset(s for label in labels for s in (label, label.lower(), label.upper()))


def _shuffle(rng: random.Random, items: list) -> None:
    """Fisher-Yates on rng.random(): same result on every platform, faster than Random.shuffle."""
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]


def _pick(rng: random.Random, candidates: list[int], n: int) -> list[int]:
    """n distinct candidates (all of them if fewer), uniformly at random, in random order."""
    size = len(candidates)
    if size <= 3 * n + 8:
        order = list(candidates)
        _shuffle(rng, order)
        return order[:n]
    seen: dict[int, None] = {}
    while len(seen) < n:
        seen[int(rng.random() * size)] = None
    return [candidates[j] for j in seen]


def draw_episode(
    task: TaskData,
    query: int,
    *,
    seed: int,
    setting: str = "natural",
    k: int | tuple[int, int] = 4,
    pool: SymbolPool | None = None,
    fmt: str | Sequence[str] = DEFAULT_EVAL_FORMAT,
    trial: int = 0,
) -> Episode:
    """One episode for query row `query`: k exemplars per class (or k drawn from a (lo, hi) range once per
    prompt), never the query itself nor a row with the same input, shuffled.

    The exemplars depend on (seed, trial, task, query) only, so all settings of a query share them; the
    label mapping depends on the setting too; fmt="random" (or a list of names) draws a format per prompt.
    """
    name = task.spec.name
    rng = random.Random(f"{seed}:{trial}:{name}:{query}")
    per_class = k[0] + int(rng.random() * (k[1] - k[0] + 1)) if isinstance(k, tuple) else k
    q_input, inputs, same = task.query_inputs[query], task.exemplar_inputs, task.same_split
    chosen = []
    for label in task.spec.labels:
        candidates = task.by_class[label]
        # One spare draw covers the query (or a duplicate of its input) turning up among the candidates.
        picked = [i for i in _pick(rng, candidates, per_class + 1) if inputs[i] != q_input and not (same and i == query)]
        if len(picked) < per_class and len(candidates) > per_class + 1:  # rare: several duplicates of the query
            picked = [i for i in _pick(rng, candidates, len(candidates)) if inputs[i] != q_input and not (same and i == query)]
        picked = picked[:per_class]
        if not picked:
            raise EpisodeError(f"task {name!r}: no exemplar of class {label!r} other than query {query}")
        chosen += picked
    _shuffle(rng, chosen)
    return Episode(name, query, tuple(chosen), *_dress(task, setting, rng, pool, fmt), setting)


def _dress(task: TaskData, setting: str, rng: random.Random, pool: SymbolPool | None,
           fmt: str | Sequence[str]) -> tuple[dict[str, str], str, str | None]:
    """(label mapping, format, instruction) of an episode, in Episode's order, drawn after its exemplars from
    the same stream (the format first): every setting of a draw shows the same exemplars, and the two symbol
    settings the same symbols."""
    if not isinstance(fmt, str) or fmt == "random":
        names = sorted(FORMATS if fmt == "random" else fmt)
        fmt = names[int(rng.random() * len(names))]
    get_format(fmt)
    st = get_setting(setting)
    return label_mapping(task.spec, st, rng, pool), fmt, task.spec.instruction if st.instruction else None


def draw_shared_episodes(
    task: TaskData,
    n_queries: int,
    *,
    seed: int,
    setting: str = "natural",
    k: int = 4,
    pool: SymbolPool | None = None,
    fmt: str | Sequence[str] = DEFAULT_EVAL_FORMAT,
    trial: int = 0,
    max_queries: int = 100,
) -> list[Episode]:
    """The shared-exemplar protocol (HELM's): one exemplar set, mapping and format per (seed, trial, task),
    the same for every query (settings differ only in their labels and instruction, as per-query draws do).

    The set avoids the inputs of the first `max_queries` queries where the class has rows enough; the queries
    are then the first `n_queries` of the seeded query order that are neither an exemplar row nor share an
    exemplar's input. Both depend on `max_queries`, not on `n_queries`: a smaller limit asks a prefix of the
    same queries with the same exemplars.
    """
    name = task.spec.name
    rng = random.Random(f"{seed}:{trial}:{name}:shared")
    order = query_order(task, seed)
    asked = {task.query_inputs[q] for q in order[:max_queries]}
    chosen = []
    for label in task.spec.labels:
        rows = task.by_class[label]
        free = [i for i in rows if task.exemplar_inputs[i] not in asked]
        picked = _pick(rng, free if len(free) >= k else rows, k)
        if not picked:
            raise EpisodeError(f"task {name!r}: no exemplar of class {label!r}")
        chosen += picked
    _shuffle(rng, chosen)
    dress = _dress(task, setting, rng, pool, fmt)
    shown = {task.exemplar_inputs[i] for i in chosen}
    taken = set(chosen) if task.same_split else set()
    queries = [q for q in order if q not in taken and task.query_inputs[q] not in shown][:n_queries]
    return [Episode(name, q, tuple(chosen), *dress, setting) for q in queries]


def render(task: TaskData, ep: Episode, chat: ChatTemplate | None = None) -> tuple[str, str]:
    """(prompt, completion): the completion is " " + the query's label surface; in a chat template, the
    prompt ends with the assistant's turn opened and the completion is the label surface alone."""
    exemplars = [(task.exemplar_inputs[i], ep.mapping[task.exemplars[i]["label"]]) for i in ep.exemplars]
    if chat is not None:
        return chat.render(FORMATS[ep.format], exemplars, task.query_inputs[ep.query], ep.instruction), ep.gold(task)
    prompt = render_prompt(FORMATS[ep.format], exemplars, task.query_inputs[ep.query], ep.instruction)
    return prompt, " " + ep.gold(task)


def drop_one(task: TaskData, ep: Episode) -> Episode | None:
    """The episode with one exemplar fewer, taken from the class with the most (ties: the later label),
    its last occurrence; None when every class is down to one exemplar."""
    counts = ep.counts(task)
    top = max(counts.values())
    if top <= 1:
        return None
    victim = [label for label in task.spec.labels if counts[label] == top][-1]
    pos = max(j for j, i in enumerate(ep.exemplars) if task.exemplars[i]["label"] == victim)
    return Episode(
        ep.task, ep.query, ep.exemplars[:pos] + ep.exemplars[pos + 1 :], ep.mapping, ep.format, ep.instruction, ep.setting
    )


def fit_budget(task: TaskData, ep: Episode, measure: Callable[[Episode], int], budget: int | None) -> Episode:
    """Drop exemplars evenly across classes until measure(episode) <= budget; the query is never cut.
    Raises BudgetError when even one exemplar per class does not fit."""
    if budget is None:
        return ep
    while (n := measure(ep)) > budget:
        smaller = drop_one(task, ep)
        if smaller is None:
            raise BudgetError(
                f"task {task.spec.name!r} query {ep.query}: {n} tokens with one exemplar per class exceeds the "
                f"budget of {budget}; raise --max-tokens or drop the task"
            )
        ep = smaller
    return ep


def exact_measure(task: TaskData, count_tokens: Callable[[str], int],
                  chat: ChatTemplate | None = None) -> Callable[[Episode], int]:
    """measure(ep) = tokens of the rendered prompt and completion."""

    def measure(ep: Episode) -> int:
        prompt, completion = render(task, ep, chat)
        return count_tokens(prompt + completion)

    return measure


class PieceMeasure:
    """A fast token-count estimate for many prompts of one task: the inputs the episodes use are tokenised
    once, in batches (`precompute`); format scaffolds and label surfaces are cached. Accurate to a token or
    so per exemplar (tokens can merge across piece boundaries); it budgets the mixture, whose exact lengths
    the tuner checks again."""

    def __init__(self, tokenizer, task: TaskData):
        self.tok, self.task = tokenizer, task
        self.q_len: dict[int, int] = {}
        self.e_len: dict[int, int] = self.q_len if task.same_split else {}
        self.cache: dict[str, int] = {}

    def _fill(self, lengths: dict[int, int], texts: Sequence[str], wanted: set[int]) -> None:
        todo = sorted(i for i in wanted if i not in lengths)
        for j in range(0, len(todo), 1024):
            chunk = todo[j : j + 1024]
            ids = self.tok([texts[i] for i in chunk], add_special_tokens=False)["input_ids"]
            lengths.update(zip(chunk, map(len, ids)))

    def precompute(self, episodes: Sequence[Episode]) -> None:
        self._fill(self.q_len, self.task.query_inputs, {ep.query for ep in episodes})
        self._fill(self.e_len, self.task.exemplar_inputs, {i for ep in episodes for i in ep.exemplars})

    def _count(self, text: str) -> int:
        n = self.cache.get(text)
        if n is None:
            n = self.cache[text] = len(self.tok(text, add_special_tokens=False)["input_ids"])
        return n

    def __call__(self, ep: Episode) -> int:
        if ep.query not in self.q_len or any(i not in self.e_len for i in ep.exemplars):
            self.precompute([ep])
        fmt, task = FORMATS[ep.format], self.task
        n = self._count(ep.instruction + "\n\n") if ep.instruction else 0
        for i in ep.exemplars:
            n += self.e_len[i] + self._count(fmt.exemplar("", ep.mapping[task.exemplars[i]["label"]]) + "\n\n")
        return n + self.q_len[ep.query] + self._count(fmt.query("") + " " + ep.gold(task))
