"""Reading what a run left behind: state.json and its stages, evaluations, the training log, the mixture.

Nothing here fails because a stage is missing: a run without tuning, or a bare evaluation directory, loads
with the missing parts as None and a note saying what is missing and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..files import read_text_maybe_gz
from ..results import EvalResults, ResultsError

STAGES = ("mixture", "tune", "eval_base", "eval_tuned")
TRAIN_LOGS = ("train_log.jsonl", "training_log.jsonl")  # symtune's JSONL log; the second name is accepted too
TUNE_CONFIGS = ("tune_config.yaml", "resolved_config.yaml", "resolved_config.json")
TUNE_SUMMARY = "tune_summary.json"


class ReportError(ValueError):
    """A directory that is neither a run nor an evaluation."""


@dataclass
class Evaluation:
    path: Path
    label: str  # "base", "tuned" or "evaluated model"
    results: EvalResults
    samples: list[dict] | None  # None without samples.jsonl (then no paired intervals)

    def rows(self, kind: str, setting: str) -> list[dict]:
        """Samples of the ICL suite ("icl", which have a task) or the algorithmic suite ("algorithmic") in a setting."""
        if not self.samples:
            return []
        key = "task" if kind == "icl" else "part"
        return [s for s in self.samples if key in s and s["setting"] == setting]


@dataclass
class Training:
    path: Path
    log: list[dict]  # one entry per logged step (HF Trainer log_history shape)
    log_file: str | None
    summary: dict | None
    config: dict | None
    config_file: str | None


@dataclass
class Run:
    name: str
    path: Path
    state: dict | None = None
    mixture: dict | None = None  # manifest.json
    mixture_path: Path | None = None
    training: Training | None = None
    base: Evaluation | None = None
    tuned: Evaluation | None = None
    notes: list[str] = field(default_factory=list)  # what is missing, in words

    @property
    def evaluations(self) -> list[Evaluation]:
        return [e for e in (self.base, self.tuned) if e is not None]

    @property
    def config(self) -> dict:
        return (self.state or {}).get("config") or {}


def _read_json(path: Path, notes: list[str]) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        notes.append(f"`{path}` cannot be read ({e}); left out")
        return None


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines (from `path`, or `path.gz` when only that exists); a torn last line (an interrupted writer) is
    dropped."""
    out = []
    for line in read_text_maybe_gz(path).splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def load_evaluation(path: Path, label: str, notes: list[str], stage: str) -> Evaluation | None:
    if not (path / "results.json").is_file():
        notes.append(f"{stage}: no results.json in `{path}`")
        return None
    try:
        results = EvalResults.load(path / "results.json")
    except ResultsError as e:
        notes.append(f"{stage}: {e}; left out")
        return None
    if not results.complete:
        notes.append(f"{stage}: `{path}/results.json` is marked incomplete; its numbers are partial")
    has_samples = any((path / name).is_file() for name in ("samples.jsonl", "samples.jsonl.gz"))
    samples = read_jsonl(path / "samples.jsonl") if has_samples else None
    if samples is None:
        notes.append(f"{stage}: no samples.jsonl in `{path}`, so deltas have no paired interval")
    return Evaluation(path, label, results, samples)


def load_training(path: Path, notes: list[str]) -> Training | None:
    log, log_file = [], None
    for name in TRAIN_LOGS:
        if (path / name).is_file():
            log, log_file = read_jsonl(path / name), name
            break
    else:
        # HF Trainer's own record: trainer_state.json in the run dir or its newest checkpoint
        states = [path / "trainer_state.json"] + sorted(path.glob("checkpoints/checkpoint-*/trainer_state.json"),
                                                        key=lambda p: int(p.parent.name.split("-")[-1]))  # fmt: skip
        for p in [s for s in states if s.is_file()][-1:]:
            log, log_file = (_read_json(p, notes) or {}).get("log_history", []), str(p.relative_to(path))
    summary = _read_json(path / TUNE_SUMMARY, notes)
    config, config_file = None, None
    for name in TUNE_CONFIGS:
        if (path / name).is_file():
            text = (path / name).read_text()
            config, config_file = (json.loads(text) if name.endswith(".json") else yaml.safe_load(text)), name
            break
    if log_file is None and summary is None:
        notes.append(f"tune: no training log ({', '.join(TRAIN_LOGS)} or trainer_state.json) in `{path}`")
        return None
    if log_file is None:
        notes.append(f"tune: no training log in `{path}`; no loss curve")
    return Training(path, log, log_file, summary, config, config_file)


def _stage_dir(run_dir: Path, entry: dict) -> Path | None:
    d = entry.get("dir")
    return None if not d else (Path(d) if Path(d).is_absolute() else run_dir / d)


def load_run(path: str | Path, name: str | None = None) -> Run:
    """A run directory (state.json) or an evaluation directory (results.json) as a Run."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory")
    run = Run(name or path.resolve().name, path)
    if not (path / "state.json").is_file():
        if not (path / "results.json").is_file():
            raise ReportError(f"{path} is neither a run directory (state.json) nor an evaluation directory (results.json)")
        run.base = load_evaluation(path, "evaluated model", run.notes, "evaluation")
        run.notes.append("an evaluation directory, not a run: no mixture, tuning or base-vs-tuned comparison")
        return run
    run.state = _read_json(path / "state.json", run.notes) or {}
    stages = run.state.get("stages") or {}
    for stage in STAGES:
        entry = stages.get(stage)
        d = _stage_dir(path, entry) if entry else None
        if entry is None or d is None:
            run.notes.append(f"{stage}: not part of this run")
            continue
        if not d.is_dir():
            run.notes.append(f"{stage}: status {entry.get('status')!r}, directory `{d}` does not exist")
            continue
        if entry.get("status") != "done":
            run.notes.append(f"{stage}: status {entry.get('status')!r} (not finished); shown as found")
        if stage == "mixture":
            run.mixture = _read_json(d / "manifest.json", run.notes)
            run.mixture_path = d
            if run.mixture is None:
                run.notes.append(f"mixture: no manifest.json in `{d}`")
        elif stage == "tune":
            run.training = load_training(d, run.notes)
        elif stage == "eval_base":
            run.base = load_evaluation(d, "base", run.notes, stage)
        else:
            run.tuned = load_evaluation(d, "tuned", run.notes, stage)
    return run


def pair_run(base: str | Path, tuned: str | Path, name: str | None = None) -> Run:
    """A Run from two evaluation directories: `base` and `tuned` (e.g. two `symtune eval` outputs)."""
    base, tuned = Path(base), Path(tuned)
    run = Run(name or f"{base.name} vs {tuned.name}", tuned)
    run.base = load_evaluation(base, "base", run.notes, "base evaluation")
    run.tuned = load_evaluation(tuned, "tuned", run.notes, "tuned evaluation")
    run.notes.append("two evaluation directories compared: no mixture or tuning stage to show")
    return run
