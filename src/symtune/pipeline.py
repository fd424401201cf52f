"""`symtune run`: mixture -> tune -> evaluate the base model -> evaluate the tuned model -> report.

Each stage writes into `<run>/stages/<stage>-<key>`, where the key hashes the stage's own configuration, the
content of the local data directory (not its path) and the keys of the stages it reads. A stage whose
directory holds a `.done` marker with its key is skipped, so a finished run does no work again and a
changed configuration redoes exactly the stages it changes. An interrupted stage resumes: tuning from its
last checkpoint, evaluation from its per-query cache.
`state.json` in the run directory records every stage's directory, key, status and duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .cache import write_atomic
from .configs import config_file, launch_args, read_yaml_mapping, unknown_names
from .eta import TRAIN_UNITS_PER_TOKEN, RunEta
from .results import EvalResults

STAGES = ("mixture", "tune", "eval_base", "eval_tuned", "report")
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "runs" / "default.yaml"


class PipelineError(ValueError):
    """A run configuration or run directory that cannot be used."""


@dataclass
class RunConfig:
    """One end-to-end run. `mixture`, `tune` and `eval` hold the options of MixtureConfig, of tune() (with
    `preset`) and of EvalConfig; `out` is the run directory, `model` the base model, `data_dir` the local
    data (None: the hub). `stages_dir` (default `<out>/stages`) may be shared by several runs: a stage with
    the same key is then done once for all of them (a study's mixture and base-model evaluation)."""

    out: str = "runs/default"
    model: str = "smollm2-135m"
    data_dir: str | None = None
    seed: int = 0
    mixture: dict = field(default_factory=dict)
    tune: dict = field(default_factory=lambda: {"preset": "cpu-small"})
    eval: dict = field(default_factory=dict)
    stages_dir: str | None = None


def load_run_config(path: str | Path | None = None, **overrides) -> RunConfig:
    path = config_file(path) if path else DEFAULT_CONFIG
    raw = read_yaml_mapping(path, "run config", PipelineError)
    known = set(RunConfig.__dataclass_fields__)
    bad = sorted(set(raw) - known)
    if bad:
        raise PipelineError(f"{path}: unknown field(s) {bad}; known: {sorted(known)}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    config = RunConfig(**raw)
    check_sections(config, str(path))
    return config


def _unknown(section: str, given: dict, known, where: str) -> None:
    bad = unknown_names(given, known)
    if bad:
        raise PipelineError(f"{where}: unknown option(s) in {section}: {', '.join(bad)}")


def check_sections(config: RunConfig, where: str = "run config") -> None:
    """Every section is checked before any stage runs: unknown options (with a did-you-mean) and bad values
    are errors naming the section."""
    from .evaluate import EvalConfig
    from .mixture import MixtureConfig
    from .tune.config import FIELD_NAMES, resolve_config

    for name in ("mixture", "tune", "eval"):
        if not isinstance(getattr(config, name), dict):
            raise PipelineError(f"{where}: {name} must be a mapping of options, got {getattr(config, name)!r}")
    _unknown("mixture", config.mixture, set(MixtureConfig.__dataclass_fields__) - {"data_dir", "seed"}, where)
    _unknown("tune", config.tune, set(FIELD_NAMES) - {"model", "mixture", "out", "seed"} | {"preset", "launch"}, where)
    _unknown("eval", config.eval, set(EvalConfig.__dataclass_fields__) - {"model", "out", "data_dir", "seed"} | {"launch"},
             where)
    try:
        for section in (config.tune, config.eval):
            if "launch" in section:
                launch_args(section["launch"])
        MixtureConfig(data_dir=config.data_dir, seed=config.seed, **config.mixture)
        opts = {k: v for k, v in config.tune.items() if k != "launch"}
        resolve_config(opts.pop("preset", "cpu-small"), **opts)
        _eval_config(config, config.model, Path("."))
    except (TypeError, ValueError) as e:
        raise PipelineError(f"{where}: {e}") from None


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
KEY_NEUTRAL = ("exemplars", "symbols")


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

    def record(self, name: str, key: str, status: str, seconds: float | None = None) -> None:
        entry = {"dir": self.show(self.stage_dir(name, key)), "key": key, "status": status}
        if seconds is not None:
            entry["seconds"] = round(seconds, 1)
        self.state["stages"][name] = entry
        write_atomic(self.state_path, json.dumps(self.state, indent=2) + "\n")

    def finish(self, name: str, key: str, seconds: float) -> None:
        (self.stage_dir(name, key) / ".done").write_text(key + "\n")
        self.record(name, key, "done", seconds)


def _eval_config(config: RunConfig, model: str, out: Path):
    from .evaluate import EvalConfig

    opts = {"seed": config.seed, **{k: v for k, v in config.eval.items() if k != "launch"}}
    return EvalConfig(model=model, out=str(out), data_dir=config.data_dir, **opts)


def run_pipeline(config: RunConfig, from_stage: str | None = None, progress: bool = True, say=print) -> dict:
    """Run (or resume) every stage; returns state.json's content."""
    from .evaluate import evaluate, format_results
    from .mixture import MixtureConfig, build_mixture
    from .models import model_identity

    if from_stage is not None and from_stage not in STAGES:
        raise PipelineError(f"unknown stage {from_stage!r}; choose from {', '.join(STAGES)}")
    run = RunDir(config)
    run.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run.dir / "config.yaml", yaml.safe_dump(asdict(config), sort_keys=False))
    redo = set(STAGES[STAGES.index(from_stage) :]) if from_stage else set()
    base_id = model_identity(config.model)

    mix_cfg = MixtureConfig(data_dir=config.data_dir, seed=config.seed, **config.mixture)
    data = data_fingerprint(config.data_dir)  # the data's content, not its path, keys the stages that read it
    specs = specs_fingerprint(config.data_dir)  # and so do the task specs: an edited label or instruction redoes
    keys = {"mixture": _key("mixture", {**asdict(mix_cfg), "data_dir": data, "specs": specs})}
    tune_opts = dict(config.tune)
    launch = tune_opts.pop("launch", None)  # how many processes does not change the result: not in the key
    keys["tune"] = _key("tune", base_id, tune_opts, config.seed, keys["mixture"])
    eval_base_cfg = _eval_config(config, config.model, Path("."))
    defaults = {f.name: f.default for f in fields(eval_base_cfg)}
    eval_opts = {k: v for k, v in asdict(eval_base_cfg).items() if k not in ("out", "model")
                 and not (k in KEY_NEUTRAL and v == defaults[k])}
    eval_opts["data_dir"], eval_opts["specs"] = data, specs
    keys["eval_base"] = _key("eval", base_id, eval_opts)
    keys["eval_tuned"] = _key("eval", keys["tune"], eval_opts)
    keys["report"] = _key("report", keys["eval_base"], keys["eval_tuned"])

    for name in redo:
        if run.stage_dir(name, keys[name]).exists():
            shutil.rmtree(run.stage_dir(name, keys[name]))
    pending = [n for n in STAGES if not run.is_done(n, keys[n])]
    eta = _run_eta(config, tune_opts, eval_base_cfg, pending, say)

    def stage(i: int, name: str, work) -> Path:
        key, d = keys[name], run.stage_dir(name, keys[name])
        if run.is_done(name, key):
            seconds = run.state["stages"].get(name, {}).get("seconds")
            say(f"[{i}/{len(STAGES)}] {name}: done earlier ({run.show(d)}), skipped")
            run.record(name, key, "done", seconds)
            eta.finish(name, seconds)
            return d
        eta.start(name)
        say(f"[{i}/{len(STAGES)}] {name} -> {run.show(d)} ({eta.line()})")
        run.record(name, key, "running")
        t0 = time.time()
        work(d)
        run.finish(name, key, time.time() - t0)
        eta.finish(name)
        say(f"[{i}/{len(STAGES)}] {name} finished in {(time.time() - t0) / 60:.1f} min")
        return d

    def do_mixture(d: Path) -> None:
        build_mixture(mix_cfg, d, overwrite=True, progress=progress)

    mixture_dir = stage(1, "mixture", do_mixture)

    def do_tune(d: Path) -> None:
        from .tune import tune

        opts = dict(tune_opts)
        preset = opts.pop("preset", "cpu-small")
        if opts.get("eval_every") and "eval_data_dir" not in opts:
            opts["eval_data_dir"] = config.data_dir  # the in-training hook reads the run's data
        resume = (d / "checkpoints").exists()
        if resume:
            say("  resuming tuning from its last checkpoint")
        if launch:
            _launch_tune(launch, config.model, str(mixture_dir), str(d), preset=preset, resume=resume,
                         overwrite=not resume, seed=config.seed, say=say, **opts)
            return
        tune(config.model, str(mixture_dir), str(d), preset=preset, resume=resume, overwrite=not resume, seed=config.seed,
             callbacks=[_eta_callback(eta, say)], **opts)

    tune_dir = stage(2, "tune", do_tune)

    results = {}

    def do_eval(model: str, tag: str):
        def work(d: Path) -> None:
            name = f"eval_{tag}"

            def on_progress(done: int, total: int) -> str:
                eta.progress(name, done / max(total, 1))
                return eta.line()

            cfg = _eval_config(config, model, d)
            if config.eval.get("launch"):  # the numbers are those of one process: not in the stage key
                results[tag] = _launch_eval(config.eval["launch"], cfg, say=say)
            else:
                results[tag] = evaluate(cfg, progress=progress, on_progress=on_progress)
            say(format_results(results[tag]))

        return work

    stage(3, "eval_base", do_eval(config.model, "base"))
    stage(4, "eval_tuned", do_eval(str(tune_dir), "tuned"))

    def do_report(d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        from .report import build_report

        path = build_report([run.dir], out=run.dir)
        say(f"  report: {path}")

    stage(5, "report", do_report)
    say(f"run finished in {(time.time() - eta.t0) / 60:.1f} min: {run.dir}")
    return run.state


def _launch_tune(launch: list, model: str, mixture: str, out: str, *, say, **kwargs) -> None:
    """The tuning stage as `accelerate launch <launch...> -m symtune.tune ...` (several GPUs or processes)."""
    from .tune.cli import tune_argv

    _accelerate(launch, ["symtune.tune", *tune_argv(model, mixture, out, **kwargs)], "tuning",
                "resumes it from its last checkpoint", say)


def _launch_eval(launch: list, cfg, *, say) -> dict:
    """An evaluation stage as `accelerate launch <launch...> -m symtune.evaluate CONFIG.json` (several GPUs or
    processes, each scoring its share of the query plan); returns the results the main process wrote."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "eval_config.json", json.dumps(asdict(cfg), indent=1))
    _accelerate(launch, ["symtune.evaluate", str(out / "eval_config.json")], "evaluation", "resumes it from its cache",
                say)
    return EvalResults.load(out / "results.json")


def _accelerate(launch: list, module_args: list[str], what: str, resume: str, say) -> None:
    """`accelerate launch <launch...> -m <module_args...>`; `launch` is the list of accelerate's own arguments,
    e.g. [--config_file, fsdp2, --num_processes, 8]."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args(launch), "-m", *module_args]
    say("  " + shlex.join(cmd))
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise PipelineError(f"{what} under accelerate launch failed (exit status {rc}); see its output above. "
                            f"Rerunning `symtune run` {resume}.")


def _run_eta(config: RunConfig, tune_opts: dict, eval_cfg, pending: list[str], say) -> RunEta:
    """The whole-run estimate, sized by the tuning tokens planned and the evaluation's prompt tokens."""
    from .tune.config import resolve_config

    opts = dict(tune_opts)
    tc = resolve_config(opts.pop("preset", "cpu-small"), **opts)
    train_tokens = tc.max_steps * tc.batch_size * tc.pack_length if tc.packing and tc.max_steps > 0 else None
    eval_tokens = None
    if {"eval_base", "eval_tuned"} & set(pending) and not eval_cfg.server:
        from .evaluate import TokenCounter, plan_tokens
        from .models import load_tokenizer

        try:
            eval_tokens = plan_tokens(eval_cfg, TokenCounter(load_tokenizer(config.model)))
        except Exception as e:  # the estimate is a convenience: the stage itself reports the real problem
            say(f"  (no time estimate for the evaluations: {e})")
    sizes = {"mixture": ("other", None), "tune": ("tune", train_tokens and TRAIN_UNITS_PER_TOKEN * train_tokens),
             "eval_base": ("eval", eval_tokens), "eval_tuned": ("eval", eval_tokens), "report": ("other", None)}  # fmt: skip
    caps = {"tune": tc.time_limit_minutes * 60} if tc.time_limit_minutes else {}
    return RunEta(sizes, caps)


def _eta_callback(eta: RunEta, say, every: float = 30.0):
    """Reports tuning progress (steps, or the time limit's share when larger) and prints the run's
    estimate at most every `every` seconds."""
    from transformers import TrainerCallback

    class EtaCallback(TrainerCallback):
        def __init__(self):
            self.t_train = self.t_said = None

        def _report(self, state) -> None:
            now = time.time()
            self.t_train = self.t_train or now
            fraction = state.global_step / state.max_steps if state.max_steps else 0.0
            limit = eta.caps.get("tune")
            if limit:
                fraction = max(fraction, (now - self.t_train) / limit)
            eta.progress("tune", fraction)
            if state.is_world_process_zero and (self.t_said is None or now - self.t_said >= every):
                self.t_said = now
                say(f"  {eta.line()}")

        def on_train_begin(self, args, state, control, **kwargs):
            self._report(state)

        def on_step_end(self, args, state, control, **kwargs):
            self._report(state)

    return EtaCallback()
