"""Decontamination: the tuning rows that an evaluation could read, found before anything is tuned on them.

Public datasets share sentences: 1,378 of sst5's 2,210 test sentences stand in rotten_tomatoes' train split,
and sst5's train split holds every sst2 train sentence. A held-out score says little if the model was tuned on
the held-out rows, so the mixture drops tuning rows that overlap an evaluation task (`symtune mixture
--keep-contaminated` keeps them) and `symtune overlap` prints the whole table.

Two inputs overlap when, normalised (a row's input is its input fields joined by a space; lower case;
everything but letters and digits a space; whitespace collapsed; a word repeated in a row kept once), they are
equal, or share a run of 13 words (the n-gram of GPT-3's and lm-eval's decontamination). An input under 13 words
has no 13-gram and is compared whole only, so a short phrase inside a long sentence does not count.

An evaluation task's rows are all its splits (queries come from test, else validation, else train; exemplars
from train), except that a task also tuned on (a diagnostic of seen tasks) contributes its held-out splits only.
Inside an evaluation task, its queries are checked against its exemplar pool as well.

Results are counts and lists in task, split and row order; dicts and sets are only looked up or sorted, so
nothing depends on set order or PYTHONHASHSEED.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat
from pathlib import Path

from .tables import format_table, markdown_table
from .tasks import TaskError, TaskSpec, available_splits, get_task, load_catalogue, load_rows, select_tasks

NGRAM = 13
TUNE_SPLIT = "train"  # what a mixture tunes on: queries and exemplars from train
EXEMPLAR_SPLIT = "train"
QUERY_SPLITS = ("test", "validation", "train")  # evaluation queries: the first that exists (as in prepare_task)
EVAL_ROLES = ("eval", "extra")
METHOD = {
    "normalise": "input fields joined by a space; lower case; characters other than letters and digits replaced "
                 "by spaces; whitespace collapsed; a word repeated in a row kept once",
    "exact": "equal normalised inputs",
    "ngram": NGRAM,
    "ngram_unit": "words",
    "short_inputs": f"inputs under {NGRAM} words are compared whole only",
    "evaluation_rows": "every split of an evaluation task (a task also tuned on: its held-out splits)",
}
_NOT_WORD = re.compile(r"[\W_]+")
# The same for ASCII text (most rows), a third faster: a byte table lowers letters and blanks the rest.
_ASCII = bytes((c | 0x20 if chr(c).isalpha() else c) if chr(c).isalnum() else 0x20 for c in range(128)) + b" " * 128


def normalise(text: str) -> list[str]:
    """The words of `text` as compared: lower case, letters and digits only, a run of one word counted once
    (tweets anonymised as "@user @user @user ..." would otherwise share 13-grams that hold nothing)."""
    if text.isascii():
        words = text.encode().translate(_ASCII).decode().split()
    else:
        words = _NOT_WORD.sub(" ", text.lower()).split()
    if any(map(operator.eq, words, words[1:])):  # rare: test first, in C
        words = [w for w, before in zip(words, [None, *words]) if w != before]
    return words


def _grams(words: list[str]) -> Iterator[tuple[str, ...]]:
    """The word 13-grams of a normalised input (none under 13 words)."""
    return zip(*(words[i:] for i in range(NGRAM)))


@dataclass
class TaskRows:
    """One task's normalised inputs by split; row i is row i of `load_rows(spec, split)` (and of prepare_task)."""

    name: str
    splits: dict[str, list[list[str]]]


def read_task(spec: TaskSpec, data_dir: str | Path | None, splits: Sequence[str] | None = None) -> TaskRows:
    """A task's rows as compared (all available splits unless `splits` names some)."""
    splits = available_splits(spec, data_dir) if splits is None else splits
    return TaskRows(spec.name, {
        s: [normalise(" ".join(r[f] for f in spec.input_fields)) for r in load_rows(spec, s, data_dir).rows]
        for s in splits
    })


class _Index:
    """Where each normalised input and each 13-gram occurs among some rows: key -> row id, or ids ascending."""

    def __init__(self):
        self.rows: list[tuple[int, str, int]] = []  # id -> (task number, split, row)
        self.exact: dict[str, list[int]] = {}
        self.grams: dict[tuple[str, ...], int | list[int]] = {}  # most 13-grams are in one row: an int

    def add(self, words: list[str], where: tuple[int, str, int]) -> None:
        rid = len(self.rows)
        self.rows.append(where)
        if not words:  # nothing left after normalising (an emoji-only tweet): equal to nothing
            return
        self.exact.setdefault(" ".join(words), []).append(rid)
        grams = list(_grams(words))
        if self.grams.keys().isdisjoint(grams):  # most rows: all new, added in C
            self.grams.update(zip(grams, repeat(rid)))
            return
        for g in grams:
            got = self.grams.setdefault(g, rid)
            if isinstance(got, list):
                if got[-1] != rid:
                    got.append(rid)
            elif got != rid:
                self.grams[g] = [got, rid]

    def find(self, words: list[str]) -> tuple[list[int], list[int]]:
        """(ids of rows equal to `words`, ids of rows sharing a 13-gram with it), each ascending."""
        if not words:
            return [], []
        same = self.exact.get(" ".join(words), [])
        if len(words) < NGRAM or self.grams.keys().isdisjoint(_grams(words)):  # most rows: settled in C
            return same, []
        shared: set[int] = set()
        for g in _grams(words):
            got = self.grams.get(g)
            if got is not None:
                shared.update(got) if isinstance(got, list) else shared.add(got)
        return same, sorted(shared)


@dataclass
class PairOverlap:
    """How one tuning task's rows overlap one evaluation task's.

    exact: tuning rows whose input equals one of the evaluation task's; ngram: further tuning rows sharing a
    13-gram with one. hit: the evaluation task's rows matched, by split; queries: those in its query split.
    """

    tuning: str
    evaluation: str
    exact: int
    ngram: int
    hit: dict[str, int]
    query_split: str | None
    n_queries: int

    @property
    def rows(self) -> int:
        return self.exact + self.ngram

    @property
    def queries(self) -> int:
        return self.hit.get(self.query_split, 0) if self.query_split else 0

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": self.rows, "queries": self.queries}


@dataclass
class PoolOverlap:
    """Queries of an evaluation task with a near-duplicate in its own exemplar pool (another row than themselves).
    Exemplar draws already skip rows with the query's exact input; these differ in case, punctuation or beyond."""

    task: str
    query_split: str
    n_queries: int
    exact: int
    ngram: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Overlap:
    """Every overlap between tuning tasks and evaluation tasks (see the module's docstring for the method).

    tuning: rows checked per tuning task (its train split). evaluation: rows per evaluation task and split.
    pairs: the (tuning, evaluation) pairs that overlap. flagged: each tuning task's overlapping rows, ascending.
    queries_hit: per evaluation task with overlap, its queries that some tuning row overlaps (whichever task).
    pools: queries with a near-duplicate in the exemplar pool, per evaluation task. unchecked: tasks that could
    not be read, and why.
    """

    tuning: dict[str, int]
    evaluation: dict[str, dict[str, int]]
    pairs: list[PairOverlap]
    flagged: dict[str, list[int]]
    queries_hit: dict[str, int] = field(default_factory=dict)
    pools: list[PoolOverlap] | None = None  # None: not checked
    unchecked: dict[str, str] = field(default_factory=dict)

    def to_dict(self, dropped: bool | None = None, rows: bool = False) -> dict:
        """The manifest's record: method, tasks, per-pair counts, whether rows were dropped; with `rows`, the
        overlapping rows of each tuning task too (indexes into its train split)."""
        out = {
            "method": METHOD,
            "tuning_rows": sum(self.tuning.values()),
            "overlapping_rows": sum(map(len, self.flagged.values())),
            "tuning": self.tuning,
            "evaluation": self.evaluation,
            "pairs": [p.to_dict() for p in self.pairs],
            "queries_hit": self.queries_hit,
            "unchecked": self.unchecked,
        }
        if self.pools is not None:
            out["pools"] = [p.to_dict() for p in self.pools]
        if dropped is not None:
            out["dropped"] = dropped
        if rows:
            out["flagged"] = self.flagged
        return out


def find_overlaps(tuning: Sequence[TaskRows], evaluation: Sequence[TaskRows], pools: bool = True) -> Overlap:
    """Compare each tuning task's train rows with every evaluation task's rows (held-out splits only for a task
    that is also tuned on); with `pools`, each evaluation task's queries with its exemplar pool too."""
    tuned = {t.name for t in tuning}
    index = _Index()
    eval_splits: dict[str, dict[str, int]] = {}
    for e, task in enumerate(evaluation):
        splits = [s for s in task.splits if not (task.name in tuned and s == TUNE_SPLIT)]
        eval_splits[task.name] = {s: len(task.splits[s]) for s in splits}
        for s in splits:
            for i, words in enumerate(task.splits[s]):
                index.add(words, (e, s, i))
    pairs, flagged = [], {}
    queries_hit: dict[int, set[int]] = {}
    for t in tuning:
        rows = t.splits.get(TUNE_SPLIT, [])
        exact = [0] * len(evaluation)
        ngram = [0] * len(evaluation)
        hit: list[dict[str, set[int]]] = [{} for _ in evaluation]
        mine = []
        for i, words in enumerate(rows):
            same, shared = index.find(words)
            if not same and not shared:
                continue
            mine.append(i)
            equal_in = {index.rows[r][0] for r in same}
            for e in sorted({index.rows[r][0] for r in shared} | equal_in):
                if e in equal_in:
                    exact[e] += 1
                else:
                    ngram[e] += 1
            for r in same + shared:
                e, s, j = index.rows[r]
                hit[e].setdefault(s, set()).add(j)
        if mine:
            flagged[t.name] = mine
        for e, task in enumerate(evaluation):
            if exact[e] or ngram[e]:
                qs = _query_split(task, tuned)
                queries_hit.setdefault(e, set()).update(hit[e].get(qs, ()))
                pairs.append(PairOverlap(t.name, task.name, exact[e], ngram[e],
                                         {s: len(hit[e][s]) for s in task.splits if s in hit[e]}, qs,
                                         len(task.splits[qs]) if qs else 0))
    return Overlap(
        tuning={t.name: len(t.splits.get(TUNE_SPLIT, [])) for t in tuning},
        evaluation=eval_splits,
        pairs=pairs,
        flagged=flagged,
        queries_hit={evaluation[e].name: len(queries_hit[e]) for e in sorted(queries_hit)},
        pools=[p for task in evaluation if (p := _pool_overlap(task, tuned)) is not None] if pools else None,
    )


def _query_split(task: TaskRows, tuned: set[str]) -> str | None:
    held_out = [s for s in QUERY_SPLITS if s in task.splits and not (task.name in tuned and s == TUNE_SPLIT)]
    return held_out[0] if held_out else None


def _pool_overlap(task: TaskRows, tuned: set[str]) -> PoolOverlap | None:
    qs = _query_split(task, tuned)
    if qs is None or EXEMPLAR_SPLIT not in task.splits or task.name in tuned:  # tuned on: its pair with itself says it
        return None
    pool = _Index()
    for i, words in enumerate(task.splits[EXEMPLAR_SPLIT]):
        pool.add(words, (0, EXEMPLAR_SPLIT, i))
    exact = ngram = 0
    for i, words in enumerate(task.splits[qs]):
        same, shared = pool.find(words)
        if qs == EXEMPLAR_SPLIT:  # queries drawn from the pool itself: a row does not overlap itself
            same, shared = [r for r in same if r != i], [r for r in shared if r != i]
        if same:
            exact += 1
        elif shared:
            ngram += 1
    return PoolOverlap(task.name, qs, len(task.splits[qs]), exact, ngram)


def evaluation_tasks(catalogue: dict[str, TaskSpec], tuning: Iterable[TaskSpec], also: Iterable[str] = (),
                     data_dir: str | Path | None = None) -> list[TaskSpec]:
    """The tasks an evaluation may read, by name: the eval- and extra-role tasks available, and `also` (e.g. a
    validation suite kept out of tuning), less the tuning tasks."""
    tuned = {s.name for s in tuning}
    found = {s.name: s for role in EVAL_ROLES for s in select_tasks(catalogue, role=role, data_dir=data_dir)}
    found.update((n, catalogue[n]) for n in also if n in catalogue)
    return [found[n] for n in sorted(found) if n not in tuned]


def check_overlap(tuning: Sequence[TaskSpec], evaluation: Sequence[TaskSpec], data_dir: str | Path | None = None,
                  pools: bool = True) -> Overlap:
    """Read the tasks and find their overlaps. A task that cannot be read is listed in `unchecked` (a tuning
    task's error is the mixture's to report)."""
    unchecked, tune_rows, eval_rows = {}, [], []
    for specs, out, splits in ((tuning, tune_rows, [TUNE_SPLIT]), (evaluation, eval_rows, None)):
        for spec in specs:
            try:
                out.append(read_task(spec, data_dir, splits))
            except TaskError as e:
                unchecked[spec.name] = str(e)
    overlap = find_overlaps(tune_rows, eval_rows, pools=pools)
    overlap.unchecked = unchecked
    return overlap


def tuning_and_evaluation(data_dir: str | Path | None = None, tasks: Sequence[str] | None = None, exclude_tasks: Sequence[str] = (),
           eval_tasks: Sequence[str] | None = None) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """(tuning tasks, evaluation tasks) as a mixture of these options sees them; `eval_tasks` replaces the default
    evaluation tasks (a tuning task named there counts with its held-out splits: a diagnostic of seen tasks)."""
    catalogue = load_catalogue(data_dir)
    excluded = [get_task(catalogue, n).name for n in exclude_tasks]
    tuning = [s for s in select_tasks(catalogue, tasks, role=None if tasks else "tune", data_dir=data_dir)
              if s.name not in excluded]
    if eval_tasks is None:
        return tuning, evaluation_tasks(catalogue, tuning, excluded, data_dir)
    named = sorted({*(get_task(catalogue, n).name for n in eval_tasks), *excluded})
    return tuning, [catalogue[n] for n in named]


def _n(x: int) -> str:
    return f"{x:,}"


def _share(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,} ({100 * part / whole:.1f}%)" if whole else "-"


def format_overlap(overlap: Overlap, markdown: bool = False) -> str:
    """The overlap as tables (plain text, or markdown): tuning x evaluation pairs, then exemplar pools vs queries."""
    table = markdown_table if markdown else format_table
    rows = [[p.tuning, p.evaluation, _n(p.exact), _n(p.ngram), _share(p.rows, overlap.tuning[p.tuning]),
             "/".join(_n(p.hit.get(s, 0)) for s in overlap.evaluation[p.evaluation]) + " " +
             "/".join(s[:5] for s in overlap.evaluation[p.evaluation]),
             f"{_share(p.queries, p.n_queries)} {p.query_split}" if p.query_split else "-"]
            for p in overlap.pairs]  # fmt: skip
    n_tune, n_eval = sum(overlap.tuning.values()), sum(sum(s.values()) for s in overlap.evaluation.values())
    out = [table(["tuning task", "evaluation task", "exact", f"{NGRAM}-gram", "tuning rows", "evaluation rows hit",
                  "queries hit"], rows) if rows else "no tuning row overlaps an evaluation task",
           "",
           f"{len(overlap.tuning)} tuning tasks ({_n(n_tune)} train rows) x {len(overlap.evaluation)} evaluation tasks "
           f"({_n(n_eval)} rows): {len(overlap.pairs)} pairs overlap; "
           f"{_n(sum(map(len, overlap.flagged.values())))} tuning rows overlap at least one evaluation task. "
           f"exact: equal normalised input; {NGRAM}-gram: a shared run of {NGRAM} words, not equal."]
    if overlap.queries_hit:
        by_task = []
        for name, n in overlap.queries_hit.items():
            qs = next(p.query_split for p in overlap.pairs if p.evaluation == name)
            by_task.append([name, qs, _share(n, overlap.evaluation[name][qs])])
        out += ["", "Queries that some tuning row overlaps, per evaluation task:", "",
                table(["evaluation task", "query split", "queries hit"], by_task)]
    if overlap.pools:
        pools = [[p.task, p.query_split, _n(p.n_queries), _n(p.exact), _n(p.ngram),
                  _share(p.exact + p.ngram, p.n_queries)] for p in overlap.pools]
        out += ["", "Queries with a near-duplicate in their own task's exemplar pool (train; another row):", "",
                table(["evaluation task", "query split", "queries", "exact", f"{NGRAM}-gram", "queries hit"], pools)]
    if overlap.unchecked:
        out += ["", "Not checked: " + "; ".join(f"{t}: {why}" for t, why in sorted(overlap.unchecked.items()))]
    return "\n".join(out)


def summary(record: dict) -> str:
    """One line from a manifest's decontamination record."""
    n_eval = len({p["evaluation"] for p in record["pairs"]})
    rows, total = record["overlapping_rows"], record["tuning_rows"]
    what = f"{rows:,} of {total:,} tuning rows overlapping {n_eval} of {len(record['evaluation'])} evaluation tasks"
    how = f"({NGRAM}-grams / exact)"
    line = f"decontamination: dropped {what} {how}" if record.get("dropped", True) else \
        f"decontamination: kept {what} {how}, as --keep-contaminated asks"
    if record["unchecked"]:
        line += f"; not checked (unreadable): {', '.join(sorted(record['unchecked']))}"
    return line


__all__ = ["METHOD", "NGRAM", "Overlap", "PairOverlap", "PoolOverlap", "TaskRows", "check_overlap", "evaluation_tasks",
           "find_overlaps", "format_overlap", "normalise", "read_task", "summary", "tuning_and_evaluation"]
