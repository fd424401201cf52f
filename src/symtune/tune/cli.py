"""`symtune tune`: flags generated from `TuneConfig`, so the CLI, the presets and `tune()` cannot drift apart; and
the in-training evaluation the `eval_*` flags ask for, handed to `tune()` (the CLI sits above evaluation, tuning
below it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields

from ..evaluate import icl_eval_fn
from ..flags import add_flags, given_options
from .config import PRESETS, TuneConfig, _check_names, resolve_config

_REQUIRED = ("model", "mixture", "out")
_NOT_FLAGS = ("preset",)  # --preset is the preset itself

EPILOG = """\
Options left out come from the preset (cpu-small unless --preset is given), then from TuneConfig's defaults.
Several processes / GPUs / machines (`symtune configs` lists the shipped accelerate configs):
  accelerate launch --config_file $(symtune configs <ddp|fsdp2|deepspeed_zero2|deepspeed_zero3>)
      [--num_processes N --num_machines M --machine_rank R --main_process_ip IP] -m symtune.tune --model ...
--batch-size stays the global batch.
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_tune_parser(subparsers) -> argparse.ArgumentParser:
    sp = subparsers.add_parser("tune", help="symbol-tune a model on a mixture (TRL SFT; full or LoRA)",
                               description="Symbol-tune a model on a mixture.", epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--preset", default="cpu-small",
                    help=f"{' or '.join(PRESETS)} or a YAML file of TuneConfig fields (default: cpu-small)")
    sp.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    sp.add_argument("--overwrite", action="store_true", help="delete a previous run in --out and start over")
    add_flags(sp, TuneConfig, skip=_NOT_FLAGS, required=_REQUIRED, defaults=False)  # defaults: the preset's first
    sp.set_defaults(func=run_tune)
    return sp


def tune_argv(model: str, mixture: str, out: str, *, preset: str = "cpu-small", resume: bool = False,
              overwrite: bool = False, **options) -> list[str]:
    """The `symtune tune` / `python -m symtune.tune` arguments that run `tune(model, mixture, out, ...)`:
    how `symtune run` hands its tuning stage to `accelerate launch`."""
    _check_names(options, "the arguments")
    types = {f.name: f.type for f in fields(TuneConfig)}
    argv = ["--model", model, "--mixture", mixture, "--out", out, "--preset", preset]
    argv += ["--resume"] * resume + ["--overwrite"] * overwrite
    for name, value in options.items():
        if value is None:
            continue
        flag = _flag(name)
        if types[name] == "bool":
            argv.append(flag if value else _flag("no_" + name))
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def eval_hook(config: TuneConfig) -> Callable | None:
    """The in-training evaluation that `eval_every` and the `eval_*` options ask for (None when eval_every is 0):
    a fixed slice of the ICL suite. Built here, by tune()'s callers (this CLI, `symtune run`), and handed to
    tune(eval_fn=...), so that tuning does not import evaluation."""
    if not config.eval_every:
        return None
    return icl_eval_fn(config.eval_data_dir, config.eval_settings, config.eval_limit, config.eval_tasks,
                       seed=config.seed)


def run_tune(args) -> int:
    from .recipe import tune

    options = given_options(args, TuneConfig, skip=_NOT_FLAGS + _REQUIRED)
    config = resolve_config(args.preset, model=args.model, mixture=args.mixture, out=args.out, **options)
    summary = tune(args.model, args.mixture, args.out, preset=args.preset, resume=args.resume,
                   overwrite=args.overwrite, eval_fn=eval_hook(config), **options)
    if summary:  # empty on the non-main processes of a multi-process run
        r = summary["results"]
        loss = f"{r['final_loss']:.4f}" if r["final_loss"] is not None else "n/a"
        print(f"tuned {summary['config']['model']} for {r['steps']} steps: final loss {loss}, {r['tokens']} tokens "
              f"({r['target_tokens']} targets) in {r['train_seconds']:.0f} s = {r['tokens_per_s']:.0f} tokens/s; "
              f"dropped {summary['data']['dropped_total']} over-long examples")
        print(f"model: {args.out} (load with symtune.models.load_model), card: {args.out}/README.md, "
              f"log: {args.out}/train_log.jsonl")
    return 0
