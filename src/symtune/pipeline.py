"""`symtune run`: mixture -> tune -> evaluate the base model -> evaluate the tuned model -> report.

Each stage writes into `<run>/stages/<stage>-<key>`, where the key hashes the stage's own configuration, the
content of the local data directory (not its path) and the keys of the stages it reads. A stage whose
directory holds a `.done` marker with its key is skipped, so a finished run does no work again and a
changed configuration redoes exactly the stages it changes. A finished stage whose output is gone (weights
deleted to free disk; a study's results kept without them) stays finished until a stage that reads it has to run. An interrupted stage resumes: tuning from its
last checkpoint, evaluation from its per-query cache.
`state.json` in the run directory records every stage's directory, key, status and duration. The run's
configuration is `runconfig.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .eta import RunEta, size_run
from .files import write_atomic
from .launch import launch_eval, launch_tune
from .runconfig import PipelineError, RunConfig

STAGES = ("mixture", "tune", "eval_base", "eval_tuned", "report")
# What each stage reads of the stages before it, and what of a finished stage its readers need: a finished stage
# whose output is gone (weights deleted to free disk, a study's results kept without them) is redone only when a
# stage that reads it has to run.
READS = {"tune": ("mixture",), "eval_tuned": ("tune",), "report": ("eval_base", "eval_tuned")}
OUTPUT = {"mixture": ("manifest.json", "records.jsonl", "dataset"), "tune": ("*.safetensors", "adapter/*.safetensors"),
          "eval_base": ("results.json",), "eval_tuned": ("results.json",), "report": ()}  # fmt: skip


def data_fingerprint(data_dir: str | None) -> str | None:
    """sha256 over every file under the local data directory (relative path and bytes): a stage is redone
    when any data file changes, and kept when the same data is moved. None (hub data): not fingerprinted."""
    if data_dir is None:
        return None
    root = Path(data_dir)
    if not root.is_dir():
        raise PipelineError(f"data_dir {data_dir!r} is not a directory; pass --data-dir PATH (see the README's data format)")
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def specs_fingerprint(data_dir: str | None) -> str:
    """One hash over the content of every task spec in the catalogue (built-in, under the data directory, in
    $SYMTUNE_TASKS): editing any spec redoes the stages that read tasks, even where the data files are unchanged."""
    from .tasks import load_catalogue

    return _key(sorted((name, spec.content_sha256) for name, spec in load_catalogue(data_dir).items()))


# Evaluation options added after stages were first keyed enter the key only when set away from their
# default, so that stages made before they existed stay valid.
KEY_NEUTRAL = ("exemplars", "symbols", "prompt_format")


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RunDir:
    """A run's directory: its stages (possibly shared with other runs) and state.json (status per stage)."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.dir = Path(config.out)
        self.stages = Path(config.stages_dir) if config.stages_dir else self.dir / "stages"
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"stages": {}}
        self.state["config"] = asdict(config)

    def stage_dir(self, name: str, key: str) -> Path:
        return self.stages / f"{name}-{key}"

    def show(self, path: Path) -> str:
        """A stage directory as a path relative to the run directory (with `..` for a shared stages_dir)."""
        return os.path.relpath(path, self.dir)

    def is_done(self, name: str, key: str) -> bool:
        marker = self.stage_dir(name, key) / ".done"
        return marker.exists() and marker.read_text().strip() == key

    def has_output(self, name: str, key: str) -> bool:
        """The stage's directory holds what the stages reading it need (tuning: any of its weight files)."""
        d = self.stage_dir(name, key)
        found = [any(d.glob(pattern)) for pattern in OUTPUT[name]]
        return any(found) if name == "tune" else all(found)

    def to_run(self, keys: dict[str, str]) -> list[str]:
        """The stages this invocation runs: the unfinished ones, and the finished ones whose output is gone that
        a stage to run reads."""
        todo: set[str] = set()
        for name in reversed(STAGES):
            readers = [r for r, reads in READS.items() if name in reads and r in todo]
            if not self.is_done(name, keys[name]) or (readers and not self.has_output(name, keys[name])):
                todo.add(name)
        return [n for n in STAGES if n in todo]

    def record(self, name: str, key: str, status: str, seconds: float | None = None) -> None:
        entry = {"dir": self.show(self.stage_dir(name, key)), "key": key, "status": status}
        if seconds is not None:
            entry["seconds"] = round(seconds, 1)
        self.state["stages"][name] = entry
        write_atomic(self.state_path, json.dumps(self.state, indent=2) + "\n")

    def finish(self, name: str, key: str, seconds: float) -> None:
        (self.stage_dir(name, key) / ".done").write_text(key + "\n")
        self.record(name, key, "done", seconds)


def stage_keys(config: RunConfig) -> dict[str, str]:
    """Each stage's key: its own options, the content of the data and of the task specs it reads, and the keys
    of the stages it builds on (the number of processes is never part of one: results do not depend on it)."""
    from .models import model_identity

    base_id = model_identity(config.model)
    data = data_fingerprint(config.data_dir)  # the data's content, not its path, keys the stages that read it
    specs = specs_fingerprint(config.data_dir)  # and so do the task specs: an edited label or instruction redoes
    keys = {"mixture": _key("mixture", {**asdict(config.mixture_config()), "data_dir": data, "specs": specs})}
    keys["tune"] = _key("tune", base_id, config.tune_options(), config.seed, keys["mixture"])
    eval_cfg = config.eval_config()
    defaults = {f.name: f.default for f in fields(eval_cfg)}
    eval_opts = {k: v for k, v in asdict(eval_cfg).items() if k not in ("out", "model")
                 and not (k in KEY_NEUTRAL and v == defaults[k])}  # fmt: skip
    eval_opts["data_dir"], eval_opts["specs"] = data, specs
    keys["eval_base"] = _key("eval", base_id, eval_opts)
    keys["eval_tuned"] = _key("eval", keys["tune"], eval_opts)
    keys["report"] = _key("report", keys["eval_base"], keys["eval_tuned"])
    return keys


@dataclass
class _Stages:
    """What the stages of one invocation share: the run, its keys, the time estimate, where to say things."""

    config: RunConfig
    run: RunDir
    keys: dict[str, str]
    eta: RunEta
    progress: bool
    say: Callable[[str], None]
    todo: list[str]
    dirs: dict[str, Path] = field(default_factory=dict)


def run_pipeline(config: RunConfig, from_stage: str | None = None, progress: bool = True, say=print) -> dict:
    """Run (or resume) every stage; returns state.json's content."""
    if from_stage is not None and from_stage not in STAGES:
        raise PipelineError(f"unknown stage {from_stage!r}; choose from {', '.join(STAGES)}")
    run = RunDir(config)
    run.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run.dir / "config.yaml", yaml.safe_dump(asdict(config), sort_keys=False))
    keys = stage_keys(config)
    for name in STAGES[STAGES.index(from_stage) :] if from_stage else ():
        if run.stage_dir(name, keys[name]).exists():
            shutil.rmtree(run.stage_dir(name, keys[name]))
    todo = run.to_run(keys)
    ctx = _Stages(config, run, keys, _run_eta(config, todo, say), progress, say, todo)
    for i, name in enumerate(STAGES, 1):
        ctx.dirs[name] = _stage(ctx, i, name)
    say(f"run finished in {(time.time() - ctx.eta.t0) / 60:.1f} min: {run.dir}")
    return run.state


def _stage(ctx: _Stages, i: int, name: str) -> Path:
    """One stage: skipped when its directory holds a finished result for its key (and, if a stage to run reads
    it, its output), else run and recorded."""
    run, key = ctx.run, ctx.keys[name]
    d = run.stage_dir(name, key)
    if name not in ctx.todo:
        seconds = run.state["stages"].get(name, {}).get("seconds")
        gone = "" if run.has_output(name, key) else "; its output is gone, and no stage left to run reads it"
        ctx.say(f"[{i}/{len(STAGES)}] {name}: done earlier ({run.show(d)}{gone}), skipped")
        run.record(name, key, "done", seconds)
        ctx.eta.finish(name, seconds)
        return d
    (d / ".done").unlink(missing_ok=True)  # redone (its output was gone): unfinished until it finishes again
    ctx.eta.start(name)
    ctx.say(f"[{i}/{len(STAGES)}] {name} -> {run.show(d)} ({ctx.eta.line()})")
    run.record(name, key, "running")
    t0 = time.time()
    WORK[name](ctx, d)
    run.finish(name, key, time.time() - t0)
    ctx.eta.finish(name)
    ctx.say(f"[{i}/{len(STAGES)}] {name} finished in {(time.time() - t0) / 60:.1f} min")
    return d


def mixture_stage(ctx: _Stages, d: Path) -> None:
    from .mixture import build_mixture

    build_mixture(ctx.config.mixture_config(), d, overwrite=True, progress=ctx.progress)


def tune_stage(ctx: _Stages, d: Path) -> None:
    from .tune import eval_hook, resolve_config, tune
    from .tune.trainer import ProgressCallback

    config = ctx.config
    opts = config.tune_options()
    preset = opts.pop("preset", "cpu-small")
    if opts.get("eval_every") and "eval_data_dir" not in opts:
        opts["eval_data_dir"] = config.data_dir  # the in-training hook reads the run's data
    resume = (d / "checkpoints").exists()
    if resume:
        ctx.say("  resuming tuning from its last checkpoint")
    common = dict(preset=preset, resume=resume, overwrite=not resume, seed=config.seed, **opts)
    if config.tune_launch:
        launch_tune(config.tune_launch, config.model, str(ctx.dirs["mixture"]), str(d), say=ctx.say, **common)
        return
    eval_fn = eval_hook(resolve_config(preset, seed=config.seed, **opts))
    tune(config.model, str(ctx.dirs["mixture"]), str(d), eval_fn=eval_fn, callbacks=[ProgressCallback(_tune_reporter(ctx))],
         **common)


def _tune_reporter(ctx: _Stages, every: float = 30.0) -> Callable[[float, float], None]:
    """Tells the estimate how far tuning is (steps, or the time limit's share when larger) and prints the
    run's estimate at most every `every` seconds."""
    said = [None]

    def report(fraction: float, seconds: float) -> None:
        limit = ctx.eta.caps.get("tune")
        ctx.eta.progress("tune", max(fraction, seconds / limit) if limit else fraction)
        if said[0] is None or time.time() - said[0] >= every:
            said[0] = time.time()
            ctx.say(f"  {ctx.eta.line()}")

    return report


def _evaluation(ctx: _Stages, d: Path, model: str, name: str) -> None:
    from .evaluate import evaluate, format_results

    def on_progress(done: int, total: int) -> str:
        ctx.eta.progress(name, done / max(total, 1))
        return ctx.eta.line()

    cfg = ctx.config.eval_config(model, d)
    launch = ctx.config.eval_launch  # the numbers are those of one process: not in the stage key
    results = launch_eval(launch, cfg, say=ctx.say) if launch else evaluate(cfg, progress=ctx.progress, on_progress=on_progress)
    ctx.say(format_results(results))


def eval_base_stage(ctx: _Stages, d: Path) -> None:
    _evaluation(ctx, d, ctx.config.model, "eval_base")


def eval_tuned_stage(ctx: _Stages, d: Path) -> None:
    _evaluation(ctx, d, str(ctx.dirs["tune"]), "eval_tuned")


def report_stage(ctx: _Stages, d: Path) -> None:
    from .report import build_report

    d.mkdir(parents=True, exist_ok=True)
    ctx.say(f"  report: {build_report([ctx.run.dir], out=ctx.run.dir)}")


WORK = {"mixture": mixture_stage, "tune": tune_stage, "eval_base": eval_base_stage, "eval_tuned": eval_tuned_stage,
        "report": report_stage}  # fmt: skip


def _run_eta(config: RunConfig, pending: list[str], say) -> RunEta:
    """The whole-run estimate, sized by the tuning tokens planned and the evaluations' prompt tokens."""
    tuning = config.tune_config()
    evaluations = [n for n in ("eval_base", "eval_tuned") if n in pending]
    return size_run(tuning, config.eval_config() if evaluations else None, config.model, say)
