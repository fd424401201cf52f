"""The `symtune` command: a thin layer that parses arguments and calls the library's functions."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .tables import format_table


def _tasks(args) -> int:
    from .tasks import is_local, load_catalogue, local_dir
    from .tasks.sources import local_splits

    catalogue = load_catalogue(args.data_dir, args.task_spec)
    rows = []
    for spec in catalogue.values():
        if args.role and spec.role != args.role:
            continue
        splits = local_splits(spec, args.data_dir)
        d = local_dir(spec, args.data_dir)
        counts = "/".join(str(_count_lines(d, s)) for s in splits) if splits else "-"
        rows.append(
            [
                spec.name,
                spec.role + ("*" if spec.paper else ""),
                spec.task_type or "",
                str(len(spec.labels)),
                "yes" if is_local(spec, args.data_dir) else "no",
                f"{'/'.join(s[:5] for s in splits)} {counts}" if splits else "-",
                spec.hub.path + (f":{spec.hub.name}" if spec.hub and spec.hub.name else "") if spec.hub else "-",
            ]
        )
    print(format_table(["task", "role", "type", "labels", "local", "local splits (rows)", "hub"], rows))
    n_local = sum(r[4] == "yes" for r in rows)
    print(f"\n{len(rows)} tasks, {n_local} available locally; * = in the paper's tuning or evaluation set")
    return 0


def _count_lines(d, split) -> int:
    from .tasks.sources import _split_file

    path = _split_file(d, split)
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    return -1


def _mixture(args) -> int:
    from .decontaminate import summary
    from .flags import given_options
    from .mixture import MixtureConfig, build_mixture

    config = MixtureConfig(**given_options(args, MixtureConfig))
    manifest = build_mixture(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    rows = []
    for task, info in manifest["tasks"].items():
        skipped = sum(info.get("skipped", {}).values())
        rows.append([task, str(info["count"]), str(skipped), info.get("error", "")])
    print(format_table(["task", "prompts", "skipped", "error"], rows))
    print(f"\n{summary(manifest['decontamination'])}")
    print(f"{manifest['total']} records -> {args.out} (records.jsonl sha256 {manifest['sha256']['records.jsonl'][:12]})")
    return 0


def _overlap(args) -> int:
    import json
    import time

    from .decontaminate import check_overlap, format_overlap, tuning_and_evaluation
    from .files import write_atomic

    t0 = time.perf_counter()
    tuning, evaluation = tuning_and_evaluation(args.data_dir, args.tasks, args.exclude_tasks or (), args.eval_tasks)
    overlap = check_overlap(tuning, evaluation, args.data_dir)
    print(format_overlap(overlap, markdown=args.markdown))
    print(f"\nchecked in {time.perf_counter() - t0:.1f} s")
    if args.json:
        write_atomic(args.json, json.dumps(overlap.to_dict(rows=True), indent=1, sort_keys=True) + "\n")
        print(f"overlaps, with the overlapping rows of each tuning task: {args.json}")
    return 0


def _eval(args) -> int:
    from .evaluate import EvalConfig, evaluate, format_results
    from .flags import given_options
    from .runner import processes

    options = given_options(args, EvalConfig)
    options.setdefault("out", f"runs/eval-{options.get('model', EvalConfig.model).rstrip('/').split('/')[-1]}")
    config = EvalConfig(**options)
    results = evaluate(config, progress=not args.quiet)
    if processes().main:  # under `accelerate launch`, the main process reports
        print(format_results(results))
        print(f"results: {config.out}/results.json, samples: {config.out}/samples.jsonl")
    return 0


EXPORT_OPTIONS = ("tasks", "settings", "data_dir", "max_queries", "limit", "k", "seed", "exemplars", "fmt", "max_tokens")


def _export(args) -> int:
    from .evaluate import EvalConfig
    from .export import export_lm_eval
    from .flags import given_options
    from .models import load_tokenizer
    from .planning import TokenCounter, plan_icl

    config = EvalConfig(suite="icl", **given_options(args, EvalConfig, only=EXPORT_OPTIONS))
    tokens = TokenCounter(load_tokenizer(args.tokenizer), config.max_tokens or 2048)
    items, _ = plan_icl(config, tokens)
    names = export_lm_eval(items, args.out)
    print(f"{len(names)} lm-eval tasks (group 'symtune') -> {args.out}")
    print(f"run: lm_eval --model hf --model_args pretrained=MODEL --include_path {args.out} --tasks symtune")
    return 0


def _report(args) -> int:
    from .report import build_report

    named = [d.split("=", 1) if "=" in d and not Path(d).exists() else (None, d) for d in args.run_dirs]
    run_dirs = [d for _, d in named]
    path = build_report(run_dirs, out=args.out, base=args.base, tuned=args.tuned, target_mde=args.target_mde,
                        names=[n for n, _ in named])
    print(f"report: {path} and {path.with_suffix('.html')}")
    if args.target_mde is not None:
        from .report import load_run
        from .report.sections import icl_deltas, sizing

        for d in run_dirs:
            head, rows = sizing(icl_deltas(load_run(d)), args.target_mde)
            print(f"\n{d}: queries per task for an MDE of {args.target_mde:g} points (generation accuracy, 80% power)")
            print(format_table(head, rows) if rows else "no paired base/tuned evaluations to size from")
    return 0


def _run(args) -> int:
    from .pipeline import run_pipeline
    from .runconfig import load_run_config

    config = load_run_config(args.config, out=args.out, model=args.model, data_dir=args.data_dir)
    run_pipeline(config, from_stage=args.from_stage, progress=not args.quiet)
    return 0


def _study(args) -> int:
    from .study import PHASES, load_study_config, run_study

    config = load_study_config(args.config, out=args.out, model=args.model, data_dir=args.data_dir,
                               finalists=args.finalists)
    if args.save_results:
        from .study import save_results

        print(f"study results (no weights): {save_results(config, args.save_results)}")
        return 0
    if args.report_only:
        from .study import write_report

        print(f"study report: {write_report(config)}")
        return 0
    run_study(config, phases=PHASES if args.phase == "all" else (args.phase,), only=args.only, progress=not args.quiet)
    return 0


def _configs(args) -> int:
    from .configs import config_path, shipped

    if args.name:
        print(config_path(args.name))
        return 0
    print(format_table(["config", "path"], [[k, str(p)] for k, p in shipped().items()]))
    print("\nuse: accelerate launch --config_file $(symtune configs fsdp2) -m symtune.tune ...; "
          "symtune run $(symtune configs runs/paper); a run config's tune.launch may name one: launch: fsdp2")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import EvalConfig
    from .flags import add_flags
    from .mixture import MixtureConfig

    p = argparse.ArgumentParser(prog="symtune", description=__doc__)
    p.add_argument("--version", action="version", version=f"symtune {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp):
        sp.add_argument("--data-dir", help="local data directory (holds tasks/<name>/{task.json,<split>.jsonl}; "
                                           "a user task is a directory there)")

    sp = sub.add_parser("tasks", help="list the task catalogue and what is available locally")
    data_args(sp)
    sp.add_argument("--task-spec", action="append", default=[], help="extra task spec file or directory (repeatable)")
    sp.add_argument("--role", choices=["tune", "eval", "extra"])
    sp.set_defaults(func=_tasks)

    sp = sub.add_parser("mixture", help="build a symbol-tuning mixture")
    sp.add_argument("--out", required=True, help="output directory")
    add_flags(sp, MixtureConfig)
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=_mixture)

    sp = sub.add_parser("overlap", help="which tuning rows overlap an evaluation task (what `mixture` drops)")
    add_flags(sp, MixtureConfig, only=("data_dir", "tasks", "exclude_tasks"))
    sp.add_argument("--eval-tasks", nargs="+", metavar="TASK",
                    help="evaluation tasks (default: every eval- and extra-role task, and --exclude-tasks); a tuning "
                         "task named here counts with its held-out splits (a diagnostic of seen tasks)")
    sp.add_argument("--markdown", action="store_true", help="print markdown tables")
    sp.add_argument("--json", metavar="OUT", help="also write the overlaps, with the rows, as JSON to OUT")
    sp.set_defaults(func=_overlap)

    sp = sub.add_parser("eval", help="measure a model's in-context learning (the paper's suite)")
    add_flags(sp, EvalConfig, skip=("out",))
    sp.add_argument("--out", help="output directory (default runs/eval-<model>)")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=_eval)

    sp = sub.add_parser("export", help="export the evaluation suite for another harness")
    sp.add_argument("harness", choices=["lm-eval"])
    add_flags(sp, EvalConfig, only=EXPORT_OPTIONS)
    sp.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer counting the prompt budget (default: smollm2-135m)")
    sp.add_argument("--out", required=True, help="output directory of the lm-eval task files")
    sp.set_defaults(func=_export)

    from .tune import add_tune_parser

    add_tune_parser(sub)

    from .pipeline import STAGES

    sp = sub.add_parser("run", help="the whole pipeline: mixture, tune, evaluate base and tuned, report")
    sp.add_argument("config", nargs="?", help="run config YAML or a shipped one's name (default, paper; default: default)")
    sp.add_argument("--data-dir", help="local data directory (overrides the config)")
    sp.add_argument("--out", help="run directory (overrides the config)")
    sp.add_argument("--model", help="base model (overrides the config)")
    sp.add_argument("--from", dest="from_stage", choices=STAGES, help="redo this stage and the ones after it")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=_run)

    sp = sub.add_parser("study", help="several tuning recipes vs one base model: validation, selection, test")
    sp.add_argument("config", help="study config YAML, or `study` (the shipped one, src/symtune/configs/runs/study.yaml)")
    sp.add_argument("--data-dir", help="local data directory (overrides the config)")
    sp.add_argument("--out", help="study directory (overrides the config)")
    sp.add_argument("--model", help="base model (overrides the config)")
    sp.add_argument("--phase", default="all", choices=["all", "validation", "test"],
                    help="validation: screen every recipe; test: select, then test the selection and the controls")
    sp.add_argument("--only", nargs="+", help="run only these recipes")
    sp.add_argument("--finalists", nargs="+", metavar="RECIPE",
                    help="test these recipes (with the controls) instead of selecting by the config's rule; recorded "
                         "as named, not selected (e.g. a recipe chosen on another model, or by an earlier study)")
    sp.add_argument("--report-only", action="store_true", help="rewrite the study report from what has finished")
    sp.add_argument("--save-results", metavar="DIR",
                    help="copy the study's results without weights, checkpoints or mixture records to DIR (a few MB); "
                         "a later study with --out a copy of DIR skips every finished recipe")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=_study)

    sp = sub.add_parser("configs", help="list the shipped configs (presets, runs, accelerate) or print one's path")
    sp.add_argument("name", nargs="?", help="a config's name (fsdp2, runs/paper, cpu-small): print its path")
    sp.set_defaults(func=_configs)

    sp = sub.add_parser("report", help="report.md + report.html for runs (side by side) or evaluation dirs")
    sp.add_argument("run_dirs", nargs="*", metavar="[NAME=]DIR",
                    help="run directories (symtune run) or evaluation directories; NAME= labels a run (default: its directory name)")
    sp.add_argument("--base", help="an evaluation directory to compare with --tuned")
    sp.add_argument("--tuned", help="an evaluation directory to compare with --base")
    sp.add_argument("--out", help="output directory (default: the first run directory)")
    sp.add_argument("--target-mde", type=float, metavar="POINTS",
                    help="size a next evaluation: queries per task for this minimum detectable effect (80%% power), "
                         "from this run's paired standard errors")
    sp.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as e:  # our errors: ValueError subclasses, and BackendError, from symtune modules
        if not type(e).__module__.startswith("symtune"):
            raise
        print(f"symtune {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
