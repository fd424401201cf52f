"""results.json as types: what `symtune eval` writes and what the report, the study and `symtune run` read.

Schema version 1 (`"schema": 1`; files written before the field existed have the same layout and read as 1):

    {"schema": 1, "complete": bool, "config": {EvalConfig fields}, "model": {identity}, "versions": {package: version},
     "seeds": {"seed": int, "trials": [int]},
     "icl": {"per_task": {setting: {task: Stats}}, "summary": {setting: Stats}},           (suites paper, icl)
     "data": {task: TaskReport},                                                          (suites paper, icl)
     "algorithmic": {"parts": {part: {setting: {"overall": AlgoStats, "categories": {name: AlgoStats},
                                                "subtasks": {name: AlgoStats}}}},
                     "skipped": {part: why}, "config": {resolved arguments}},             (suites paper, algorithmic)
     "timing": {"seconds": float, "queries": int, "resumed_from_cache": int, "processes": int}}

A Stats object is flat in JSON: "n", "chance", one key per metric (acc, acc_norm_tokens, acc_norm_chars,
gen_acc: accuracy in [0, 1] or null when not scored), "gen_in_label_set"; a setting's summary (the macro
average over tasks) adds "tasks", "<metric>_ci95" ([low, high], bootstrap over queries) and, with several
exemplar draws, "<metric>_trials" (the macro average per draw) and "<metric>_trial_std".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
METRICS = ("acc", "acc_norm_tokens", "acc_norm_chars", "gen_acc")


class ResultsError(ValueError):
    """A results.json that cannot be read as this version's schema."""


@dataclass
class Stats:
    """Accuracy of one task in one setting, or a setting's macro average over tasks (then `tasks` is set)."""

    n: int
    chance: float | None = None
    acc: float | None = None
    acc_norm_tokens: float | None = None
    acc_norm_chars: float | None = None
    gen_acc: float | None = None
    gen_in_label_set: float | None = None
    tasks: int | None = None
    ci95: dict[str, list[float]] = field(default_factory=dict)  # metric -> [low, high]
    trials: dict[str, list[float]] = field(default_factory=dict)  # metric -> the value per exemplar draw
    trial_std: dict[str, float] = field(default_factory=dict)  # metric -> their standard deviation

    def value(self, metric: str) -> float | None:
        if metric not in (*METRICS, "gen_in_label_set", "chance"):
            raise ResultsError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
        return getattr(self, metric)

    def to_dict(self) -> dict:
        if self.tasks is None:  # one task
            return {"n": self.n, "chance": self.chance, **{m: getattr(self, m) for m in METRICS},
                    "gen_in_label_set": self.gen_in_label_set}  # fmt: skip
        out = {"tasks": self.tasks, "n": self.n, "chance": self.chance, "gen_in_label_set": self.gen_in_label_set}
        for m in METRICS:
            out[m] = getattr(self, m)
            for suffix, got in (("ci95", self.ci95), ("trials", self.trials), ("trial_std", self.trial_std)):
                if m in got:
                    out[f"{m}_{suffix}"] = got[m]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Stats:
        def by_metric(suffix):
            return {m: d[f"{m}_{suffix}"] for m in METRICS if d.get(f"{m}_{suffix}") is not None}

        return cls(n=d["n"], chance=d.get("chance"), **{m: d.get(m) for m in METRICS},
                   gen_in_label_set=d.get("gen_in_label_set"), tasks=d.get("tasks"), ci95=by_metric("ci95"),
                   trials=by_metric("trials"), trial_std=by_metric("trial_std"))  # fmt: skip


@dataclass
class IclResults:
    """The in-context-learning suite: per setting, per task and the macro average over tasks."""

    per_task: dict[str, dict[str, Stats]]
    summary: dict[str, Stats]

    def to_dict(self) -> dict:
        return {"per_task": {s: {t: st.to_dict() for t, st in tasks.items()} for s, tasks in self.per_task.items()},
                "summary": {s: st.to_dict() for s, st in self.summary.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> IclResults:
        return cls({s: {t: Stats.from_dict(st) for t, st in tasks.items()} for s, tasks in d["per_task"].items()},
                   {s: Stats.from_dict(st) for s, st in d["summary"].items()})  # fmt: skip


@dataclass
class TaskReport:
    """What one evaluation task read: its splits, sources and their hashes, what was skipped or trimmed."""

    labels: int
    query_split: str
    exemplar_split: str
    sources: dict[str, str]
    sha256: dict[str, str]
    skipped: dict[str, int]
    trimmed: int = 0
    spec_sha256: str | None = None  # the task spec's content (absent in files written before it was recorded)
    note: str | None = None  # e.g. fewer queries available than asked

    def to_dict(self) -> dict:
        out = {"labels": self.labels, "query_split": self.query_split, "exemplar_split": self.exemplar_split,
               "sources": self.sources, "sha256": self.sha256, "spec_sha256": self.spec_sha256,
               "skipped": self.skipped, "trimmed": self.trimmed}  # fmt: skip
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TaskReport:
        return cls(d["labels"], d["query_split"], d["exemplar_split"], d.get("sources") or {}, d.get("sha256") or {},
                   d.get("skipped") or {}, d.get("trimmed", 0), d.get("spec_sha256"), d.get("note"))  # fmt: skip


@dataclass
class AlgoStats:
    """Greedy answers of the algorithmic suite: counts and accuracies (None without queries)."""

    n: int
    exact: int
    parsed: int
    malformed: int
    cut: int = 0
    exact_acc: float | None = None
    parsed_acc: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> AlgoStats:
        return cls(d["n"], d["exact"], d["parsed"], d["malformed"], d.get("cut", 0), d.get("exact_acc"), d.get("parsed_acc"))


@dataclass
class AlgoSetting:
    overall: AlgoStats
    categories: dict[str, AlgoStats]
    subtasks: dict[str, AlgoStats]

    def to_dict(self) -> dict:
        return {"overall": self.overall.to_dict(), "categories": {k: v.to_dict() for k, v in self.categories.items()},
                "subtasks": {k: v.to_dict() for k, v in self.subtasks.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> AlgoSetting:
        return cls(AlgoStats.from_dict(d["overall"]), {k: AlgoStats.from_dict(v) for k, v in d["categories"].items()},
                   {k: AlgoStats.from_dict(v) for k, v in d["subtasks"].items()})  # fmt: skip


@dataclass
class AlgoResults:
    """The algorithmic suite: per part and setting; parts that had no queries, with the reason."""

    parts: dict[str, dict[str, AlgoSetting]]
    skipped: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the resolved arguments of build_algorithmic_requests

    def to_dict(self) -> dict:
        return {"parts": {p: {s: t.to_dict() for s, t in by.items()} for p, by in self.parts.items()},
                "skipped": self.skipped, "config": self.config}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> AlgoResults:
        return cls({p: {s: AlgoSetting.from_dict(t) for s, t in by.items()} for p, by in d["parts"].items()},
                   d.get("skipped") or {}, d.get("config") or {})  # fmt: skip


@dataclass
class Timing:
    seconds: float
    queries: int
    resumed_from_cache: int = 0
    processes: int = 1


@dataclass
class EvalResults:
    """One evaluation (results.json). `icl`/`data` exist for the suites paper and icl, `algorithmic` for paper
    and algorithmic; `complete` is False while it runs (a file that says so holds partial numbers)."""

    config: dict
    model: dict
    versions: dict[str, str] = field(default_factory=dict)
    seeds: dict = field(default_factory=dict)
    icl: IclResults | None = None
    data: dict[str, TaskReport] = field(default_factory=dict)
    algorithmic: AlgoResults | None = None
    timing: Timing | None = None
    complete: bool = False
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        out = {"schema": self.schema, "complete": self.complete, "config": self.config, "model": self.model,
               "versions": self.versions, "seeds": self.seeds}  # fmt: skip
        if self.icl is not None:
            out["icl"] = self.icl.to_dict()
            out["data"] = {t: r.to_dict() for t, r in self.data.items()}
        if self.algorithmic is not None:
            out["algorithmic"] = self.algorithmic.to_dict()
        if self.timing is not None:
            out["timing"] = dict(self.timing.__dict__)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict, where: str = "results") -> EvalResults:
        schema = d.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise ResultsError(f"{where}: schema {schema!r} is newer than this symtune reads ({SCHEMA_VERSION}); "
                               "upgrade symtune")  # fmt: skip
        try:
            return cls(
                config=d.get("config") or {}, model=d.get("model") or {}, versions=d.get("versions") or {},
                seeds=d.get("seeds") or {}, icl=IclResults.from_dict(d["icl"]) if d.get("icl") else None,
                data={t: TaskReport.from_dict(r) for t, r in (d.get("data") or {}).items()},
                algorithmic=AlgoResults.from_dict(d["algorithmic"]) if d.get("algorithmic") else None,
                timing=Timing(**d["timing"]) if d.get("timing") else None, complete=bool(d.get("complete")),
                schema=schema,
            )  # fmt: skip
        except (KeyError, TypeError, AttributeError) as e:
            raise ResultsError(f"{where}: not a symtune results file (schema {schema}): {type(e).__name__} {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> EvalResults:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ResultsError(f"{path}: cannot read ({e})") from None
        if not isinstance(raw, dict):
            raise ResultsError(f"{path}: a results file is a JSON object, got {type(raw).__name__}")
        return cls.from_dict(raw, str(path))
