"""Stages handed to `accelerate launch` (several GPUs, processes or machines): tuning as `-m symtune.tune`,
evaluation as `-m symtune.evaluate CONFIG.json`; the run config's `launch` lists accelerate's own arguments."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .configs import launch_args
from .files import write_atomic
from .results import EvalResults


class LaunchError(ValueError):
    """A stage that failed under `accelerate launch`; rerunning resumes it."""


def launch_tune(launch: list, model: str, mixture: str, out: str, *, say, **kwargs) -> None:
    """The tuning stage as `accelerate launch <launch...> -m symtune.tune ...` (several GPUs or processes)."""
    from .tune.cli import tune_argv

    accelerate_launch(launch, ["symtune.tune", *tune_argv(model, mixture, out, **kwargs)], "tuning",
                "resumes it from its last checkpoint", say)


def launch_eval(launch: list, cfg, *, say) -> EvalResults:
    """An evaluation stage as `accelerate launch <launch...> -m symtune.evaluate CONFIG.json` (several GPUs or
    processes, each scoring its share of the query plan); returns the results the main process wrote."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "eval_config.json", json.dumps(asdict(cfg), indent=1))
    accelerate_launch(launch, ["symtune.evaluate", str(out / "eval_config.json")], "evaluation", "resumes it from its cache",
                say)
    return EvalResults.load(out / "results.json")


def accelerate_launch(launch: list, module_args: list[str], what: str, resume: str, say) -> None:
    """`accelerate launch <launch...> -m <module_args...>`; `launch` is the list of accelerate's own arguments,
    e.g. [--config_file, fsdp2, --num_processes, 8]."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args(launch), "-m", *module_args]
    say("  " + shlex.join(cmd))
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise LaunchError(f"{what} under accelerate launch failed (exit status {rc}); see its output above. "
                            f"Rerunning `symtune run` {resume}.")
