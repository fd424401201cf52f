"""`symtune report`: a run's results as report.md, a self-contained report.html and figures/*.png.

    from symtune.report import build_report
    build_report(["runs/default"])                  # -> runs/default/report.md (+ report.html, figures/)
    build_report(["runs/a", "runs/b"], out="cmp")   # several runs side by side

A run directory is what `symtune run` writes (state.json naming the stage directories); a bare evaluation
directory (results.json) works too, and `base=`/`tuned=` compare two evaluation directories directly.
Missing stages are stated in the report, never papered over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..files import write_atomic
from ..metrics import pct
from .answers import outside_label_set
from .document import to_html, to_markdown
from .figures import bar_figure, delta_figure
from .identities import identities
from .runs import ReportError, Run, load_run, pair_run
from .sections import (
    METRIC_TITLES,
    algo_parts,
    algo_stats,
    algorithmic,
    delta_cell,
    flipped,
    icl_deltas,
    icl_summary,
    interval,
    per_task,
    settings_of,
    signed,
    sizing_section,
    table1,
    training,
    value,
)

__all__ = ["ReportError", "build_report", "load_run", "pair_run"]


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    base: str | Path | None = None,
    tuned: str | Path | None = None,
    title: str = "symtune report",
    target_mde: float | None = None,
    names: Sequence[str | None] | None = None,
) -> Path:
    """Write report.md, report.html and figures/*.png for the runs; return the path of report.md.

    run_dirs: run directories (state.json) or evaluation directories (results.json), shown side by side
    when there are several. base/tuned: two evaluation directories to compare as one more run. out: the
    output directory (default: the first run directory, else the tuned one). names: the runs' labels (default:
    their directory names). target_mde: points; adds, per run,
    the queries per task each setting needs for that minimum detectable effect (this run as the pilot)."""
    names = list(names or [None] * len(run_dirs))
    if len(names) != len(run_dirs):
        raise ReportError(f"{len(names)} names for {len(run_dirs)} runs: give one name per run (or none)")
    runs = [load_run(d, name) for d, name in zip(run_dirs, names)]
    if base is not None or tuned is not None:
        if base is None or tuned is None:
            raise ReportError("base and tuned go together: give both evaluation directories")
        runs.append(pair_run(base, tuned))
    if not runs:
        raise ReportError("nothing to report: give at least one run or evaluation directory")
    _unique_names(runs)
    out = Path(out) if out is not None else runs[0].path
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    blocks: list[tuple] = [("h", 1, title),
                           ("p", f"{len(runs)} run(s): " + ", ".join(f"**{r.name}** (`{r.path}`)" for r in runs)
                                 + f". Written by symtune {__version__} on {time.strftime('%Y-%m-%d %H:%M')}.")]  # fmt: skip
    blocks += how_to_read(runs)
    deltas = {r.name: icl_deltas(r) for r in runs}
    if len(runs) > 1:
        blocks += side_by_side(runs, deltas, fig_dir)
    for i, run in enumerate(runs):
        prefix = "" if len(runs) == 1 else f"{i + 1}-{_slug(run.name)}-"
        sections = [
            *table1(run, deltas[run.name], fig_dir, prefix),
            *(sizing_section(deltas[run.name], target_mde) if target_mde is not None else []),
            *per_task(run),
            *outside_label_set(run),
            *flipped(run, fig_dir, prefix),
            *algorithmic(run, fig_dir, prefix),
            *training(run, fig_dir, prefix),
            *identities(run),
        ]
        if len(runs) > 1:  # one level down under the run's own heading
            sections = [("h", b[1] + 1, b[2]) if b[0] == "h" else b for b in sections]
            blocks.append(("h", 2, f"Run {i + 1}: {run.name}"))
        if run.notes:
            blocks += [("p", "**Not in this run** (shown as missing below):"), ("ul", run.notes)]
        blocks += sections
    _remove_stale_figures(fig_dir, {b[1].name for b in blocks if b[0] == "img"})
    md = out / "report.md"
    write_atomic(md, to_markdown(blocks, out))
    write_atomic(out / "report.html", to_html(blocks, title))
    return md


FIGURE_NAME = re.compile(r"^(\d+-.*-)?(table1|flipped|algorithmic|loss|runs|deltas)\.png$")


def _remove_stale_figures(fig_dir: Path, written: set[str]) -> None:
    """Figures an earlier report wrote that this one does not use (only names this module writes)."""
    for p in fig_dir.glob("*.png"):
        if p.name not in written and FIGURE_NAME.match(p.name):
            p.unlink()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:40] or "run"


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name} ({seen[r.name]})"
        else:
            seen[r.name] = 1


def _columns(run: Run) -> list[str]:
    """A run's column group: base, tuned and Δ; or its one evaluation; or a placeholder."""
    names = [f"{run.name}: {e.label}" for e in run.evaluations] or [f"{run.name}: no evaluation"]
    return names + ([f"{run.name}: Δ"] if len(names) == 2 else [])


def how_to_read(runs: list[Run]) -> list[tuple]:
    chance = {}
    for r in runs:
        for e in r.evaluations:
            for s, st in (e.results.icl.summary if e.results.icl else {}).items():
                chance.setdefault(s, st.chance)
    chance_text = ", ".join(f"{s} {pct(c)}%" for s, c in chance.items()) if chance else "none measured here"
    return [
        ("h", 2, "How to read this"),
        ("p", "Symbol tuning (Wei et al., 2023) fine-tunes a model on few-shot prompts whose instructions are removed and "
              "whose labels are replaced by arbitrary symbols, so the task can only be learnt from the exemplars. The "
              "evaluation asks held-out classification tasks in five settings: **natural+instr** (relevant natural labels "
              "and the task instruction), **natural** (labels, no instruction), **symbol+instr** (labels replaced by "
              "held-out symbols such as `foo` or `7391`, instruction kept), **symbol** (symbols, no instruction: only the "
              "exemplars say what the task is) and **flipped** (binary tasks, natural labels swapped in exemplars and "
              "query: above chance only by following the exemplars against prior knowledge). The paper reports that "
              "symbol tuning helps most without relevant labels and with flipped labels, and that small models can lose "
              "accuracy where natural labels are present (8B: 63.9 → 57.6)."),
        ("p", "Two scoring rules are reported. **Generation accuracy** (greedy answer, exact match after light "
              "normalisation; answers outside the label set count as wrong, and their share is shown) is the paper's "
              "likely rule. **Rank accuracy** (the label with the highest log-likelihood; always inside the label set) is "
              "the common alternative and is usually higher for small models, which often answer outside the label set. "
              f"Scores are macro averages over tasks; chance (the average of 1/number of labels) here: {chance_text}. "
              "Over the paper's 11 tasks chance is 42.4%; flipped-label tasks are binary (50%)."),
        ("p", "Small models and small query limits give noisy numbers, the symbol settings most of all: a different draw "
              "of symbols alone moved a 135M model by 3 points (measured while designing symtune). Believe a difference when its paired interval "
              "excludes 0, and prefer more queries or `--trials N` (several exemplar draws) before comparing runs."),
    ]


def _describe(r: Run) -> list[str]:
    """What tells runs apart: model, tuning preset and seed, steps, final loss, evaluation seed and size."""
    e = r.tuned or r.base
    ec = e.results.config if e else {}
    tc = (r.training.config or (r.training.summary or {}).get("config") or {}) if r.training else {}
    res = ((r.training.summary or {}).get("results") or {}) if r.training else {}
    base = r.base.results.model if r.base else {}
    model = tc.get("model") or r.config.get("model") or base.get("name") or base.get("model")
    preset = tc.get("preset") or (r.config.get("tune") or {}).get("preset") or r.config.get("preset")
    loss = res.get("final_loss")
    return [r.name, str(model or "-"), str(preset or "-"), str(tc.get("seed", "-")), str(res.get("steps", "-")),
            "-" if loss is None else f"{loss:.4f}", str(ec.get("seed", "-")), str(ec.get("trials", "-")),
            ec.get("exemplars", "per-query") if ec else "-", str(ec.get("limit") or ec.get("max_queries") or "-"), ", ".join(x.label for x in r.evaluations) or "none"]  # fmt: skip


def side_by_side(runs: list[Run], deltas: dict, fig_dir: Path) -> list[tuple]:
    """One column group per run: base, tuned and Δ per setting, for each scoring rule; then the algorithmic
    overall rows."""
    blocks: list[tuple] = [("h", 2, "Runs side by side")]
    head = ["run", "model", "preset", "tune seed", "steps", "final loss", "eval seed", "trials", "exemplars",
            "queries per task", "evaluations"]
    blocks.append(("table", head, [_describe(r) for r in runs]))
    settings = settings_of([e for r in runs for e in r.evaluations])
    head = [c for r in runs for c in _columns(r)]
    chances = {s: {round(icl_summary(e, s).chance or 0, 6) for r in runs for e in r.evaluations if icl_summary(e, s)}
               for s in settings}  # fmt: skip
    if any(len(c) > 1 for c in chances.values()):
        blocks.append(("p", "**The runs were evaluated on different task sets** (their chance levels differ), so their "
                            "accuracies are not directly comparable; the chance column is the first run's."))  # fmt: skip
    panels = []
    for m, title in METRIC_TITLES.items():
        table = []
        for s in settings:
            chance = next((icl_summary(e, s).chance for r in runs for e in r.evaluations if icl_summary(e, s)), None)
            row = [s, pct(chance)]
            for r in runs:
                vals = [value(icl_summary(e, s), m) for e in r.evaluations]
                row += vals and [pct(v) for v in vals] or ["-"]
                if len(vals) == 2:
                    row.append(delta_cell(deltas[r.name].get((s, m)), *vals))
            table.append(row)
        blocks += [("h", 3, title.split(":")[0]), ("table", ["setting", "chance %", *head], table)]
        series = [(f"{r.name}: {e.label}", [value(icl_summary(e, s), m) for s in settings],
                   [interval(icl_summary(e, s), m) for s in settings]) for r in runs for e in r.evaluations]  # fmt: skip
        if any(v is not None for _, vals, _ in series for v in vals):
            panels.append({"title": title.split(":")[0], "groups": settings, "series": series,
                           "chance": [next((icl_summary(e, s).chance for r in runs for e in r.evaluations if icl_summary(e, s)), None)
                                      for s in settings]})  # fmt: skip
    algo = []
    keys = list(dict.fromkeys((p, s) for r in runs for e in r.evaluations for p, by in algo_parts(e).items() for s in by))
    for part, s in keys:
        row = [part, s]
        for r in runs:
            vals = [getattr(algo_stats(e, part, s), "exact_acc", None) for e in r.evaluations]
            row += vals and [pct(v) for v in vals] or ["-"]
            if len(vals) == 2:
                row.append("-" if None in vals else signed(vals[1] - vals[0]))
        algo.append(row)
    if algo:
        blocks += [("h", 3, "Algorithmic, exact match % (all categories)"), ("table", ["part", "setting", *head], algo),
                   ("p", "Paired intervals for these differences are in each run's own section.")]  # fmt: skip
    if panels:
        blocks.append(("img", bar_figure(fig_dir / "runs.png", panels), "Accuracy per setting, every run's evaluations; dashes: chance."))
    paired = [r for r in runs if any(deltas[r.name].get((s, "gen_acc")) for s in settings)]
    if paired:
        fig = delta_figure(fig_dir / "deltas.png", settings, [(r.name, [deltas[r.name].get((s, "gen_acc")) for s in settings])
                                                             for r in paired], "Tuned − base, generation accuracy")  # fmt: skip
        blocks.append(("img", fig, "Δ per setting for every run with both evaluations: the point, its paired 95% interval "
                                   "(thick: queries resampled; thin: tasks + queries), grey: ± the first run's MDE."))  # fmt: skip
    return blocks
