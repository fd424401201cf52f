"""The symbol-tuning mixture: few-shot prompts without instructions, labels replaced by tuning-pool symbols.

Output directory (written atomically; the same config gives byte-identical files):
    records.jsonl   one {"prompt", "completion", "task", "format", "mapping", "seed", "index", ...} a line
    dataset/        the same records as a `datasets` dataset (mapping as a JSON string)
    manifest.json   config, versions, per-task counts and skips, decontamination, content hashes

Tuning rows that overlap an evaluation task (decontaminate.py) are left out, from the queries and the exemplar
pool alike, before the seeded draws: keep_contaminated keeps them; the manifest records the overlaps either way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from .decontaminate import Overlap, check_overlap, tuning_and_evaluation
from .episodes import (
    BudgetError,
    EpisodeError,
    PieceMeasure,
    draw_episode,
    fit_budget,
    prepare_task,
    query_order,
    render,
)
from .files import publish_dir
from .flags import option
from .formats import FORMATS, get_format, render_prompt
from .instructions import instruction_records
from .provenance import file_sha256, package_versions
from .symbols import CATEGORIES, SymbolPool
from .tasks import TaskError, load_catalogue

KIND = "symtune-mixture"
LABEL_MODES = ("symbol", "natural", "random")
FORMAT_VERSION = 1


class MixtureError(ValueError):
    """A mixture that cannot be built or read; the message says what to do."""


@dataclass
class MixtureConfig:
    """How to build a symbol-tuning mixture.

    tasks: task names; None takes every tune-role task available (locally when data_dir is given).
    max_per_task: at most this many prompts per task (one per training row, in a seeded order).
    k_min, k_max: exemplars per class, drawn uniformly per prompt.
    formats: input-label formats to draw from (None: all ten).
    symbol_categories, num_symbols: the tuning symbol pool (ablations: e.g. ["words"], 300).
    max_tokens, tokenizer: token budget per prompt+target and the tokenizer that counts it (None: no budget).
    instruction_data, symbol_fraction: optionally mix in an instruction-tuning dataset (a local
        .jsonl/.json/.csv/.parquet file or a hub id with prompt/completion or instruction[/input]/output
        columns) so that symbol prompts make up `symbol_fraction` of the records.
    exclude_tasks: tasks left out of the default selection (e.g. a validation suite kept out of tuning); they count
        as evaluation tasks for decontamination, as the eval- and extra-role tasks do.
    keep_contaminated: keep the tuning rows that overlap an evaluation task (equal normalised input or a shared
        13-gram, in any split; see decontaminate.py); by default they are dropped before the seeded draws.
    labels: "symbol" (symbol tuning), or one of the paper's controls: "natural" (the same prompts with
        their instruction and natural labels: continued instruction tuning) or "random" (symbol prompts
        whose labels are inconsistent: every exemplar's and the query's symbol drawn at random among the
        prompt's symbols, so the exemplars teach nothing).
    natural_fraction: this share of each task's prompts (a seeded draw per prompt) keeps its instruction and
        natural labels instead: symbol tuning mixed with instruction-style prompts of the same tasks (an
        offline stand-in for the paper's instruction-data mix). With labels="random", the natural share stays
        natural and only the symbol prompts get inconsistent labels (the random control of such a mix).
    """

    data_dir: str | None = option(None, "local data directory (holds tasks/<name>/{task.json,<split>.jsonl}; a user "
                                        "task is a directory there; default: the hub)")
    tasks: list[str] | None = option(None, "task names (default: every tune-role task available)")
    max_per_task: int = option(25_000, "at most this many prompts per task")
    k_min: int = option(2, "fewest exemplars per class")
    k_max: int = option(10, "most exemplars per class")
    formats: list[str] | None = option(None, "input-label formats to draw from (default: all ten)")
    symbol_categories: list[str] = option(list(CATEGORIES), "symbol categories of the tuning pool")
    num_symbols: int | None = option(None, "distinct tuning symbols (ablation: 30, 300, 3000, 30000; default: all)")
    max_tokens: int | None = option(2048, "token budget per prompt+target (none: no budget)")
    tokenizer: str | None = option("smollm2-135m", "tokenizer counting the budget (none: no budget)")
    seed: int = option(0, "seed of every draw")
    instruction_data: str | None = option(None, "instruction-tuning data to mix in (file or hub id)")
    symbol_fraction: float = option(1.0, "share of symbol prompts when mixing in instruction data")
    exclude_tasks: list[str] | None = option(None, "tasks to leave out (e.g. a validation suite)")
    labels: str = option("symbol", "symbol: symbol tuning; the paper's controls: natural (instruction + natural "
                                   "labels), random (inconsistent symbols)", choices=LABEL_MODES)
    natural_fraction: float = option(0.0, "share of prompts kept with instruction and natural labels (mixed into "
                                          "symbol tuning)")
    keep_contaminated: bool = option(False, "keep tuning rows that overlap an evaluation task (default: drop them; "
                                            "`symtune overlap` lists the overlaps)")

    def __post_init__(self):
        if self.labels not in LABEL_MODES:
            raise MixtureError(f"labels={self.labels!r} is not one of {', '.join(LABEL_MODES)}")
        if not 0 <= self.natural_fraction < 1:
            raise MixtureError(f"natural_fraction must be in [0, 1), got {self.natural_fraction}")
        if self.natural_fraction and self.labels == "natural":
            raise MixtureError("natural_fraction keeps a share of the prompts natural; labels='natural' already makes "
                               "every prompt natural: use natural_fraction=0")
        if not 1 <= self.k_min <= self.k_max:
            raise MixtureError(f"need 1 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.max_per_task < 1:
            raise MixtureError(f"max_per_task must be >= 1, got {self.max_per_task}")
        if not 0 < self.symbol_fraction <= 1:
            raise MixtureError(f"symbol_fraction must be in (0, 1], got {self.symbol_fraction}")
        if self.symbol_fraction < 1 and not self.instruction_data:
            raise MixtureError("symbol_fraction < 1 needs --instruction-data to mix in")
        for f in self.formats or []:
            get_format(f)
        if self.max_tokens is not None and self.max_tokens < 16:
            raise MixtureError(f"max_tokens={self.max_tokens} is too small for any prompt")
        SymbolPool("tune", tuple(self.symbol_categories), self.num_symbols)  # validates


def _tokenizer(name: str | None):
    if name is None:
        return None
    from .models import load_tokenizer

    return load_tokenizer(name)


def _setting(task, config: MixtureConfig, query: int) -> str:
    """The prompt setting of one record: symbols, or natural labels with the instruction (control, or mixed in)."""
    if config.labels == "natural":
        return "natural+instr"
    if config.natural_fraction and random.Random(f"{config.seed}:{task.spec.name}:{query}:natural").random() < config.natural_fraction:
        return "natural+instr"
    return "symbol"


def _render_random(task, ep, seed: int) -> tuple[str, str]:
    """The random-label control: each exemplar's and the query's symbol drawn independently among the prompt's."""
    rng = random.Random(f"{seed}:{task.spec.name}:{ep.query}:random-labels")
    symbols = [ep.mapping[label] for label in task.spec.labels]
    exemplars = [(task.exemplar_inputs[i], symbols[int(rng.random() * len(symbols))]) for i in ep.exemplars]
    prompt = render_prompt(FORMATS[ep.format], exemplars, task.query_inputs[ep.query], ep.instruction)
    return prompt, " " + symbols[int(rng.random() * len(symbols))]


def iter_task_records(task, config: MixtureConfig, pool: SymbolPool, measure=None, skipped=None,
                      drop: frozenset[int] = frozenset()):
    """Symbol-tuning records of one prepared task (TaskData), in its seeded query order; rows in `drop`
    (contaminated) are neither queries nor exemplars."""
    fmts = config.formats or "random"
    k = (config.k_min, config.k_max)
    if drop:  # taken out of the full seeded order before the cap: the other rows keep their places
        task = replace(task, by_class={label: [i for i in rows if i not in drop] for label, rows in task.by_class.items()})
    queries = [q for q in query_order(task, config.seed) if q not in drop][: config.max_per_task]
    episodes = [
        draw_episode(task, q, seed=config.seed, setting=_setting(task, config, q), k=k, pool=pool, fmt=fmts)
        for q in queries
    ]
    if measure is not None:
        measure.precompute(episodes)
    for ep in episodes:
        try:
            ep = fit_budget(task, ep, measure, config.max_tokens) if measure else ep
        except BudgetError:
            skipped["over token budget with 1 exemplar per class"] = skipped.get("over token budget with 1 exemplar per class", 0) + 1
            continue
        randomised = config.labels == "random" and ep.setting == "symbol"  # a natural share stays natural
        prompt, completion = _render_random(task, ep, config.seed) if randomised else render(task, ep)
        yield {
            "prompt": prompt,
            "completion": completion,
            "task": task.spec.name,
            "format": ep.format,
            "mapping": ep.mapping,
            "seed": config.seed,
            "index": ep.query,
            "n_exemplars": len(ep.exemplars),
        }


def build_records(config: MixtureConfig, progress: bool = True) -> tuple[list[dict], dict, Overlap]:
    """All records, a report {task: {"count", "skipped", "source", "sha256"}} and the tuning rows' overlaps with
    the evaluation tasks (dropped unless config.keep_contaminated)."""
    unknown = sorted(set(config.exclude_tasks or ()) - set(load_catalogue(config.data_dir)))
    if unknown:
        raise MixtureError(f"exclude_tasks names unknown task(s) {unknown}; see `symtune tasks`")
    # the same tasks `symtune overlap` checks for these options
    specs, evaluation = tuning_and_evaluation(config.data_dir, config.tasks, config.exclude_tasks or ())
    if not specs:
        raise MixtureError(f"no tuning tasks available (data dir: {config.data_dir}); pass --data-dir or --tasks")
    overlap = check_overlap(specs, evaluation, config.data_dir, pools=False)
    pool = SymbolPool("tune", tuple(config.symbol_categories), config.num_symbols)
    tok = _tokenizer(config.tokenizer) if config.max_tokens else None
    records, report = [], {}
    bar = tqdm(specs, desc="mixture", unit="task", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        try:
            task = prepare_task(spec, config.data_dir, purpose="tune")
        except TaskError as e:
            report[spec.name] = {"count": 0, "error": str(e)}
            continue
        skipped = dict(task.skipped)
        drop = frozenset(() if config.keep_contaminated else overlap.flagged.get(spec.name, ()))
        if drop:
            skipped[f"{task.query_split}: overlaps an evaluation task"] = len(drop)
        measure = PieceMeasure(tok, task) if tok is not None else None
        try:
            recs = list(iter_task_records(task, config, pool, measure, skipped, drop))
        except EpisodeError as e:
            report[spec.name] = {"count": 0, "error": str(e)}
            continue
        records += recs
        report[spec.name] = {"count": len(recs), "skipped": skipped, "sources": task.sources, "sha256": task.sha256,
                             "spec_sha256": spec.content_sha256}
    if config.instruction_data:
        n_sym = len(records)
        n_instr = round(n_sym * (1 - config.symbol_fraction) / config.symbol_fraction)
        instr = instruction_records(config.instruction_data, n_instr, config.seed, MixtureError)
        report["instruction"] = {"count": len(instr), "wanted": n_instr, "source": config.instruction_data}
        records += instr
    if not records:
        raise MixtureError(f"the mixture is empty: {json.dumps(report)[:2000]}")
    return records, report, overlap


def write_mixture(records: list[dict], report: dict, config: MixtureConfig, out: str | Path, overwrite: bool = False,
                  overlap: Overlap | None = None) -> Path:
    """Write records.jsonl, dataset/ and manifest.json into a temporary directory, then rename it to `out`."""
    import datasets
    import pyarrow as pa

    out = Path(out)
    if out.exists() and not overwrite:
        raise MixtureError(f"{out} already exists; pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with (tmp / "records.jsonl").open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        digest = file_sha256(tmp / "records.jsonl")
        table = pa.Table.from_pylist([{**r, "mapping": json.dumps(r["mapping"], ensure_ascii=False, sort_keys=True)} for r in records])
        datasets.Dataset(table, fingerprint=digest[:16]).save_to_disk(str(tmp / "dataset"))
        manifest = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "config": asdict(config),
            "versions": package_versions(),
            "counts": {t: r["count"] for t, r in report.items()},
            "total": len(records),
            "tasks": report,
            "decontamination": overlap.to_dict(dropped=not config.keep_contaminated) if overlap else None,
            "sha256": {"records.jsonl": digest},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_mixture(config: MixtureConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> dict:
    """Build and write a mixture; returns its manifest."""
    records, report, overlap = build_records(config, progress=progress)
    path = write_mixture(records, report, config, out, overwrite=overwrite, overlap=overlap)
    return json.loads((path / "manifest.json").read_text())


def load_mixture(path: str | Path):
    """(datasets.Dataset, manifest) of a mixture directory, after checking its manifest and records hash."""
    import datasets

    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise MixtureError(f"{path} is not a symtune mixture (no manifest.json); build one with `symtune mixture`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise MixtureError(f"{manifest_path}: malformed manifest ({e}); rebuild the mixture") from None
    if manifest.get("kind") != KIND or manifest.get("format_version") != FORMAT_VERSION:
        raise MixtureError(
            f"{manifest_path}: kind {manifest.get('kind')!r} version {manifest.get('format_version')!r}; this symtune "
            f"reads {KIND!r} version {FORMAT_VERSION}: rebuild the mixture with this version"
        )
    records = path / "records.jsonl"
    if not records.is_file() or file_sha256(records) != manifest["sha256"]["records.jsonl"]:
        raise MixtureError(f"{records} is missing or does not match the manifest's hash; rebuild the mixture")
    return datasets.load_from_disk(str(path / "dataset")), manifest


__all__ = ["MixtureConfig", "MixtureError", "build_mixture", "build_records", "load_mixture", "write_mixture"]
