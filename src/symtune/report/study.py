"""The report of a study (symtune study): recipes side by side on the validation suite, the selection, and the
test suite for the selected recipe(s), the controls and the base model.

Every Δ is tuned minus base with a paired bootstrap interval (the same queries for both models, paired.py);
recipes not yet run are listed as pending, so the report is useful while the study is still running.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from matplotlib.figure import Figure

from .. import __version__
from .document import to_html, to_markdown
from .figures import COLORS, bar_figure, evaluation_points, save_png
from .paired import algorithmic_delta
from .runs import Run, load_run
from .sections import (
    METRIC_TITLES,
    delta_cell,
    icl_deltas,
    icl_summary,
    interval,
    power_cell,
    settings_of,
    value,
    with_ci,
)

SHORT = {"gen_acc": "generation accuracy", "acc": "rank accuracy"}


def _load(config, phase: str) -> dict[str, Run]:
    out = {}
    for r in config.recipes:
        d = Path(config.out) / phase / r.name
        if (d / "state.json").is_file():
            out[r.name] = load_run(d, r.name)
    return out


def _overrides(recipe) -> str:
    parts = [f"{k}={v}" for section in ("mixture", "tune") for k, v in getattr(recipe, section).items()]
    return ", ".join(parts) or "(the study's shared settings)"


def _tokens(run: Run) -> str:
    res = ((run.training.summary or {}).get("results") or {}) if run.training else {}
    if not res.get("tokens"):
        return "-"
    return f"{res['tokens'] / 1e6:.2f}M in {res['steps']} steps"


def _algo_cells(run: Run) -> list[str]:
    """Δ exact match over each generated/BIG-bench algorithmic part (all settings pooled), paired."""
    if not (run.base and run.tuned) or run.base.results.algorithmic is None:
        return []
    cells = []
    for part in sorted(run.base.results.algorithmic.parts):
        b = [s for s in run.base.samples or [] if s.get("part") == part]
        t = [s for s in run.tuned.samples or [] if s.get("part") == part]
        cells.append(f"{part}: {delta_cell(algorithmic_delta(b, t, 'exact'))}")
    return cells


def _recipe_table(config, runs: dict[str, Run], metric: str, selection: dict | None) -> list[tuple]:
    done = {n: r for n, r in runs.items() if r.base and r.tuned}
    if not done:
        return [("p", "No recipe has finished both evaluations yet.")]
    settings = settings_of([e for r in done.values() for e in r.evaluations])
    first = next(iter(done.values()))
    head = ["recipe", "overrides", "tuning tokens"] + [f"{s}: Δ [95% CI]" for s in settings]
    rows = [["base model", "-", "-"] + [f"{with_ci(icl_summary(first.base, s), metric)} (absolute)" for s in settings]]
    power = []
    for r in config.recipes:
        run = done.get(r.name)
        if run is None:
            continue
        deltas = icl_deltas(run)
        name = r.name + (" (control)" if r.control else "") + (" ★" if selection and r.name in selection["finalists"] else "")
        rows.append([name, _overrides(r), _tokens(run)] + [delta_cell(deltas.get((s, metric))) for s in settings])
        power.append([name] + [power_cell(deltas.get((s, metric))) for s in settings])
    return [("h", 3, f"{SHORT[metric].capitalize()}, tuned minus base (points)"), ("table", head, rows),
            ("p", "What each Δ could see: its minimum detectable effect at 80% power (queries resampled, points) and "
                  "its interval with the tasks resampled too."),
            ("table", ["recipe"] + settings, power)]  # fmt: skip


def _against_controls(config, runs: dict[str, Run], selection: dict | None) -> list[tuple]:
    """Each finalist minus each control, paired on the same test queries (the control's tuned model as the base):
    the paper's controls are to be beaten, not only the base model."""
    done = {n: r for n, r in runs.items() if r.tuned and r.tuned.samples}
    finalists = [n for n in (selection or {}).get("finalists", []) if n in done]
    controls = [r.name for r in config.recipes if r.control and r.name in done]
    pairs = [Run(f"{f} − {c}", done[f].path, base=done[c].tuned, tuned=done[f].tuned) for f in finalists for c in controls]
    if not pairs:
        return []
    settings = settings_of([e for r in pairs for e in r.evaluations])
    deltas = {r.name: icl_deltas(r) for r in pairs}
    blocks = [("h", 3, "Finalist against each control, paired"),
              ("p", "Δ: the finalist's tuned model minus the control's, on the same test queries and exemplar draws, in "
                    "points with a paired bootstrap 95% interval. Symbol tuning should beat both controls in the "
                    "settings without usable labels (symbol, flipped).")]  # fmt: skip
    for m in METRIC_TITLES:
        rows = [[r.name] + [f"{delta_cell(deltas[r.name].get((s, m)))}; {power_cell(deltas[r.name].get((s, m)))}"
                            for s in settings] for r in pairs]  # fmt: skip
        blocks += [("p", f"**{SHORT[m].capitalize()}**"),
                   ("table", ["finalist − control"] + [f"{s}: Δ [95% CI]; MDE; tasks + queries" for s in settings], rows)]
    return blocks


def _figure(path: Path, runs: dict[str, Run], names: list[str], title: str) -> Path | None:
    done = [runs[n] for n in names if n in runs and runs[n].base and runs[n].tuned]
    if not done:
        return None
    settings = settings_of([e for r in done for e in r.evaluations])
    panels = []
    for m in METRIC_TITLES:
        series = [("base", [value(icl_summary(done[0].base, s), m) for s in settings],
                   [interval(icl_summary(done[0].base, s), m) for s in settings])]  # fmt: skip
        series += [(r.name, [value(icl_summary(r.tuned, s), m) for s in settings],
                    [interval(icl_summary(r.tuned, s), m) for s in settings]) for r in done]  # fmt: skip
        chance = [value(icl_summary(done[0].base, s), "chance") for s in settings]
        panels.append({"title": f"{title}: {SHORT[m]} (95% bootstrap intervals)", "groups": settings, "series": series,
                       "chance": chance})  # fmt: skip
    return bar_figure(path, panels)


def _curves(path: Path, runs: dict[str, Run]) -> Path | None:
    """Learning curves from the in-training evaluation hook: one panel per measured number, one line per recipe."""
    points = {n: evaluation_points(r.training.log) for n, r in runs.items() if r.training}
    keys = sorted({k for p in points.values() for k in p if k.startswith("icl/") and k.endswith("/acc")})  # rank accuracy
    if not keys:
        return None
    fig = Figure(figsize=(7.5, 2.8 * len(keys)))
    axes = fig.subplots(len(keys), 1, squeeze=False, sharex=True)[:, 0]
    for ax, k in zip(axes, keys):
        for j, (name, p) in enumerate(points.items()):
            if k in p:
                steps, values = zip(*p[k])
                ax.plot(steps, [100 * v for v in values], marker="o", ms=3, color=COLORS[(j + 1) % len(COLORS)], label=name)
        ax.set_title(f"during training: {k[4:]}", fontsize=10)
        ax.set_ylabel("accuracy %", fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    return save_png(fig, path)


def build_study_report(config, scores: dict[str, dict]) -> Path:
    """report.md, report.html and figures/ in the study directory; returns the path of report.md. `scores`: the
    validation scores so far (`study.validation_scores`), shown until the selection records its own."""
    out = Path(config.out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    val, test = _load(config, "validation"), _load(config, "test")
    sel_path = out / "selection.json"
    selection = json.loads(sel_path.read_text()) if sel_path.is_file() else None
    v, t = config.validation, config.test
    blocks: list[tuple] = [
        ("h", 1, f"symtune study: {Path(config.out).name}"),
        ("p", f"Base model `{config.model}`, seed {config.seed}. {len(config.recipes)} recipes "
              f"({sum(r.control for r in config.recipes)} controls). Written by symtune {__version__} on "
              f"{time.strftime('%Y-%m-%d %H:%M')}."),
        ("ul", [f"**validation** (every recipe): tasks {', '.join(v.get('tasks') or ['the default'])}; settings "
                f"{', '.join(v.get('settings') or [])}; {v.get('limit') or v.get('max_queries', 100)} queries per task, "
                f"{v.get('trials', 1)} exemplar draw(s)",
                f"**test** (selected recipes, controls, base): tasks {', '.join(t.get('tasks') or ['the 11 held-out tasks'])}; "
                f"settings {', '.join(t.get('settings') or [])}; {t.get('limit') or t.get('max_queries', 100)} queries per "
                f"task, {t.get('trials', 1)} exemplar draw(s)",
                "selection rule: " + (selection["rule"] if selection else
                                      f"mean validation Δ {config.select.get('metric', 'gen_acc')} over "
                                      f"{', '.join(config.select.get('settings', []))} (not applied yet)")]),
        ("p", "Δ: tuned minus base in points, macro-averaged over tasks, with a paired bootstrap 95% interval "
              "(the same queries and exemplar draws for both models, queries resampled within each task). "
              "★: selected on the validation suite. The test suite is run only for the selected recipe(s), the "
              "controls and the base model."),
    ]
    diag = _load(config, "diagnostic") if config.diagnostic else {}
    sections = [("validation", val, [r.name for r in config.recipes]),
                ("test", test, [r.name for r in config.recipes if r.name in test])]
    if config.diagnostic:
        d = config.diagnostic
        sections.insert(1, ("diagnostic", diag, [r.name for r in config.recipes]))
    titles = {"validation": "Validation suite", "test": "Test suite",
              "diagnostic": "Seen tasks: new queries of tuning tasks (a diagnostic, never used for selection)"}
    for phase, runs, names in sections:
        blocks.append(("h", 2, titles[phase]))
        if phase == "diagnostic":
            blocks.append(("p", f"Tasks {', '.join(d.get('tasks') or [])}, queries from their test (else validation) "
                                f"split, which tuning never used; settings {', '.join(d.get('settings') or [])}; "
                                f"{d.get('limit') or d.get('max_queries', 100)} queries per task. It asks whether a recipe "
                                "teaches in-context learning on the tasks it was tuned on, whether or not that transfers "
                                "to new tasks (the validation and test suites)."))  # fmt: skip
        # validation and diagnostic run every recipe but the controls; the test phase those it has started
        wanted = [r.name for r in config.recipes if (r.name in test if phase == "test" else not r.control)]
        pending = [n for n in wanted if not (n in runs and runs[n].base and runs[n].tuned)]
        if phase == "test" and not test:
            blocks.append(("p", "Not run yet (the test phase runs after the selection)."))
            continue
        for m in METRIC_TITLES:
            blocks += _recipe_table(config, runs, m, selection)
        if phase == "test":
            blocks += _against_controls(config, runs, selection)
        algo = [[n, *cells] for n, r in runs.items() if (cells := _algo_cells(r))]  # each bootstrap once
        if algo:
            blocks += [("h", 3, "Algorithmic tasks: Δ exact match, paired"), ("ul", [" · ".join(a) for a in algo])]
        fig = _figure(fig_dir / f"{phase}.png", runs, names, phase)
        if fig:
            blocks.append(("img", fig, f"{phase}: macro-average accuracy per setting, base and every recipe; dashes: chance."))
        if pending:
            blocks.append(("p", f"Pending (not finished): {', '.join(pending)}."))
    scores = selection["scores"] if selection else scores
    if scores:
        rows = [[n, f"{v['score'] * 100:+.1f}", ", ".join(f"{k} {d * 100:+.1f}" for k, d in v["per_setting"].items()),
                 "★" if selection and n in selection["finalists"] else ""] for n, v in scores.items()]  # fmt: skip
        rule = (f"Rule: {selection['rule']}." if selection else
                "Not applied yet (it is applied once, when the test phase starts); the scores so far:")
        blocks += [("h", 2, "Selection"), ("p", rule),
                   ("table", ["recipe", "validation score (points)", "per setting", "selected"], rows)]
    curves = _curves(fig_dir / "curves.png", val)
    if curves:
        blocks += [("h", 2, "Learning curves"), ("img", curves, "In-context accuracy measured during training (validation tasks).")]
    blocks += [("h", 2, "Recipes"), ("table", ["recipe", "control", "overrides", "note"],
                                      [[r.name, "yes" if r.control else "", _overrides(r), r.note] for r in config.recipes])]
    md = out / "report.md"
    md.write_text(to_markdown(blocks, out), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, f"symtune study: {Path(config.out).name}"), encoding="utf-8")
    return md


__all__ = ["build_study_report"]
