"""The sections of one run's report, as blocks (see document.py): Table 1, per task, flipped labels,
algorithmic reasoning, training, and the run's config and data identities."""

from __future__ import annotations

from pathlib import Path

from ..episodes import EVAL_SETTINGS, SETTINGS
from ..metrics import interval_cell, pct
from ..results import AlgoSetting, AlgoStats, Stats
from .figures import bar_figure, evaluation_points, loss_figure
from .paired import algorithmic_delta, icl_delta, queries_for_mde
from .runs import Evaluation, Run

METRIC_TITLES = {
    "gen_acc": "Generation accuracy: greedy answer, exact match after light normalisation (the paper's likely rule)",
    "acc": "Rank accuracy: the label with the highest summed log-likelihood",
}
LABELS = {"natural": "✓", "symbol": "✗ (symbols)", "flipped": "flipped"}


def signed(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def with_ci(stats: Stats | None, m: str) -> str:
    """"48.7 [40.1, 57.0]" (+ the spread over exemplar draws when there were several)."""
    return interval_cell(stats, m, long=True)


def delta_cell(d: dict | None, b: float | None = None, t: float | None = None) -> str:
    if d is not None:
        lo, hi = d["ci95"]
        return f"{signed(d['delta'])} [{signed(lo)}, {signed(hi)}]"
    if b is not None and t is not None:
        return f"{signed(t - b)} (no interval)"
    return "-"


def mde_cell(d: dict | None, kind: str = "") -> str:
    """The minimum detectable effect (80% power) of a paired Δ, in points; kind "" (queries) or "_tasks"."""
    v = d.get(f"mde80{kind}") if d else None
    return "-" if v is None else f"{100 * v:.1f}"


def _tasks_interval(d: dict | None) -> str | None:
    """Δ's interval with the tasks resampled as well as the queries, "[-8.1, +12.0]"; None with one task."""
    if not d or d.get("ci95_tasks") is None:
        return None
    lo, hi = d["ci95_tasks"]
    return f"[{signed(lo)}, {signed(hi)}]"


def tasks_cell(d: dict | None) -> str:
    """Δ's interval with tasks resampled as well as queries, and its MDE: "[-8.1, +12.0], MDE 9.4"."""
    interval = _tasks_interval(d)
    return "-" if interval is None else f"{interval}, MDE {mde_cell(d, '_tasks')}"


def changed_answers(base_rows: list[dict], tuned_rows: list[dict]) -> float | None:
    """The share of queries (paired by id) whose greedy answer differs between the two evaluations: how much
    tuning changed the model's behaviour, whichever way it moved accuracy."""
    tuned = {s["id"]: s.get("gen_prediction") for s in tuned_rows}
    pairs = [(s.get("gen_prediction"), tuned[s["id"]]) for s in base_rows if s["id"] in tuned]
    pairs = [(b, t) for b, t in pairs if b is not None and t is not None]
    return sum(b != t for b, t in pairs) / len(pairs) if pairs else None


def power_cell(d: dict | None) -> str:
    """What a paired Δ could see: "MDE 9.3; tasks + queries [-5.5, +12.3]" (the second part with several tasks)."""
    if not d or d.get("mde80") is None:
        return "-"
    interval = _tasks_interval(d)
    return f"MDE {mde_cell(d)}" + ("" if interval is None else f"; tasks + queries {interval}")


def arrow(b: float | None, t: float | None, paired: bool) -> str:
    return f"{pct(b)} → {pct(t)}" if paired else pct(b if b is not None else t)


def settings_of(evals: list[Evaluation]) -> list[str]:
    seen = [s for e in evals if e.results.icl for s in e.results.icl.summary]
    return [s for s in EVAL_SETTINGS if s in seen] + sorted({s for s in seen if s not in EVAL_SETTINGS})


def icl_summary(e: Evaluation | None, setting: str) -> Stats | None:
    return e.results.icl.summary.get(setting) if e and e.results.icl else None


def _per_task(e: Evaluation | None, setting: str) -> dict[str, Stats]:
    return e.results.icl.per_task.get(setting) or {} if e and e.results.icl else {}


def value(stats: Stats | None, key: str) -> float | None:
    """A metric (or chance, or the share of answers in the label set) of stats that may be missing."""
    return stats.value(key) if stats else None


def interval(stats: Stats | None, metric: str) -> list[float] | None:
    return stats.ci95.get(metric) if stats else None


def icl_deltas(run: Run) -> dict:
    """{(setting, metric): paired delta or None}, for both evaluations' common settings."""
    out = {}
    if not (run.base and run.tuned):
        return out
    for s in settings_of(run.evaluations):
        for m in ("acc", "gen_acc", "acc_norm_tokens", "acc_norm_chars"):
            out[(s, m)] = icl_delta(run.base.rows("icl", s), run.tuned.rows("icl", s), m)
    return out


def _get(e: Evaluation | None, setting: str, key: str) -> float | None:
    return value(icl_summary(e, setting), key)


def table1(run: Run, deltas: dict, fig_dir: Path, prefix: str) -> list[tuple]:
    """Per setting: accuracy of base and tuned with their intervals, Δ with its paired interval, chance; for both
    scoring rules, then the length-normalised rank variants, then the chart."""
    evals = [e for e in run.evaluations if e.results.icl]
    blocks: list[tuple] = [("h", 2, "In-context learning: the Table-1 comparison")]
    if not evals:
        return blocks + [("p", "No in-context-learning results in this run (no evaluation stage, or the suite was "
                                "`algorithmic` only).")]  # fmt: skip
    paired = len(evals) == 2
    b, t = (run.base, run.tuned) if paired else (evals[0], None)
    if not paired:
        missing = "No tuned evaluation in this run." if run.tuned is None else "No base evaluation in this run."
        blocks.append(("p", f"Only one evaluation ({b.label}); no base-vs-tuned comparison. {missing}"))
    settings = settings_of(evals)
    for m, title in METRIC_TITLES.items():
        blocks.append(("h", 3, title))
        if all(_get(e, s, m) is None for e in evals for s in settings):
            blocks.append(("p", "Not scored in this run (the evaluation ran without generation)."))
            continue
        head = ["setting", "relevant labels", "instruction", "chance %", f"{b.label} % [95% CI]"]
        if paired:
            head += ["tuned % [95% CI]", "Δ points [95% CI, paired: queries]", "MDE points", "Δ 95% CI: tasks + queries"]
        if m == "gen_acc":
            head.append("answers in label set %")
            if paired:
                head.append("answers changed %")
        rows = []
        for s in settings:
            meta = SETTINGS.get(s)
            row = [s, LABELS[meta.labels] if meta else "?", ("✓" if meta.instruction else "✗") if meta else "?",
                   pct(_get(b, s, "chance") or _get(t, s, "chance")), with_ci(icl_summary(b, s), m)]  # fmt: skip
            if paired:
                d = deltas.get((s, m))
                row += [with_ci(icl_summary(t, s), m), delta_cell(d, _get(b, s, m), _get(t, s, m)), mde_cell(d), tasks_cell(d)]
            if m == "gen_acc":
                row.append(arrow(_get(b, s, "gen_in_label_set"), _get(t, s, "gen_in_label_set"), paired))
                if paired:
                    row.append(pct(changed_answers(b.rows("icl", s), t.rows("icl", s))))
            rows.append(row)
        blocks.append(("table", head, rows))
    if paired:
        blocks.append(("p", _pairing_note(deltas)))
        norm = []
        for s in settings:
            row = [s, arrow(_get(b, s, "acc"), _get(t, s, "acc"), True)]
            for m in ("acc_norm_tokens", "acc_norm_chars"):
                row += [arrow(_get(b, s, m), _get(t, s, m), True), delta_cell(deltas.get((s, m)))]
            norm.append(row)
        blocks += [("p", "Rank accuracy with length-normalised scores (the summed log-likelihood divided by the "
                         "label's number of tokens, or of characters), base → tuned:"),
                   ("table", ["setting", "rank (sum) %", "per token %", "Δ per token", "per character %", "Δ per character"], norm)]  # fmt: skip
    panels = []
    for m, title in METRIC_TITLES.items():
        series = [(e.label, [_get(e, s, m) for s in settings], [interval(icl_summary(e, s), m) for s in settings]) for e in evals]
        if any(v is not None for _, vals, _ in series for v in vals):
            panels.append({"title": title.split(":")[0] + " (95% bootstrap intervals)", "groups": settings,
                           "series": series, "chance": [_get(b, s, "chance") or _get(t, s, "chance") for s in settings]})  # fmt: skip
    if panels:
        fig = bar_figure(fig_dir / f"{prefix}table1.png", panels)
        blocks.append(("img", fig, "Macro-average accuracy per setting; dashes: chance."))
    return blocks


def _pairing_note(deltas: dict) -> str:
    got = [d for d in deltas.values() if d]
    text = ("Δ is tuned minus base in points. Its interval is a paired bootstrap (2000 resamples): each query is "
            "paired with the same query (same task, setting, exemplar draw and query id) in the other evaluation; "
            "queries (with all their exemplar draws) are resampled within each task, the same ones for both "
            "models, and the macro average's difference is taken. The base and tuned intervals are the "
            "evaluation's own bootstrap (queries resampled within each task). **MDE** is the minimum detectable "
            "effect at 80% power (two-sided 5% test): 2.8 × the paired standard error; a true Δ smaller than it is "
            "missed more often than one time in five, so an interval containing 0 says little about effects below "
            "it. The **tasks + queries** interval resamples the tasks as well (then queries within each drawn task): "
            "what other tasks of the same kind would give, the one a claim about new tasks needs. **Answers "
            "changed** is the share of queries whose greedy answer differs between the two models, right or wrong: "
            "whether tuning changed the model's behaviour at all.")  # fmt: skip
    sizing = [(d["queries"], d["mde80"]) for d in got if d.get("mde80")]
    if sizing:
        n, worst = max(sizing, key=lambda x: x[1])
        text += (f" To size a next evaluation: the widest query-level MDE here is {100 * worst:.1f} points at "
                 f"{n:.0f} queries per task; the MDE falls as 1/√(queries), so `symtune report RUN --target-mde "
                 "POINTS` prints the queries per task each setting needs.")  # fmt: skip
    unpaired = max((d["unpaired"] for d in got), default=0)
    if unpaired:
        text += (f" **{unpaired} queries of a setting were in only one evaluation** (different limits or configs); "
                 "Δ is computed on the common queries only, so it can differ from the difference of the columns.")  # fmt: skip
    if not got:
        text += " No samples.jsonl pairs were found, so Δ is the plain difference without an interval."
    return text


def sizing(deltas: dict, target_points: float, metric: str = "gen_acc") -> tuple[list[str], list[list[str]]]:
    """Per setting: the paired Δ's MDE measured here (the pilot) and the queries per task that would bring the
    query-level MDE to target_points, the tasks fixed. Resampling tasks as well adds a between-task part that
    more queries do not remove: the tasks + queries MDE is shown for that reason."""
    head = ["setting", "queries per task now", "MDE now (queries)", "MDE now (tasks + queries)",
            f"queries per task for MDE {target_points:g}"]
    rows = []
    for (s, m), d in deltas.items():
        if m != metric or not d or not d.get("mde80"):
            continue
        need = queries_for_mde(d["queries"], 100 * d["mde80"], target_points)
        rows.append([s, f"{d['queries']:.0f}", mde_cell(d), mde_cell(d, "_tasks"), str(need)])
    return head, rows


def sizing_section(deltas: dict, target_points: float) -> list[tuple]:
    head, rows = sizing(deltas, target_points)
    if not rows:
        return [("h", 2, "Sizing the next evaluation"), ("p", "No paired Δ in this run to size from.")]
    return [("h", 2, "Sizing the next evaluation"),
            ("p", f"From this run as a pilot (generation accuracy): queries per task for a minimum detectable effect of "
                  f"{target_points:g} points at 80% power, tasks fixed (the MDE falls as 1/√queries). Claims about new "
                  "tasks need the tasks + queries MDE, which more queries per task shrink only down to the spread "
                  "between tasks: more tasks are the remedy there."),
            ("table", head, rows)]  # fmt: skip


def per_task(run: Run) -> list[tuple]:
    evals = [e for e in run.evaluations if e.results.icl]
    if not evals:
        return []
    paired = run.base is not None and run.tuned is not None and len(evals) == 2
    b, t = (run.base, run.tuned) if paired else (evals[0], None)
    settings = settings_of(evals)
    tasks = sorted({task for e in evals for s in settings for task in _per_task(e, s)})
    blocks: list[tuple] = [("h", 2, "Per task"),
                           ("p", f"Accuracy % per task and setting, {'base → tuned' if paired else evals[0].label}; "
                                 "n is the number of queries per setting (all exemplar draws).")]  # fmt: skip
    for m, title in METRIC_TITLES.items():
        rows = []
        for task in tasks:
            cells = []
            for s in settings:
                pb, pt = _per_task(b, s).get(task), _per_task(t, s).get(task)
                cells.append("n/a" if pb is None and pt is None else arrow(value(pb, m), value(pt, m), paired))
            first = next((_per_task(e, s)[task] for e in evals for s in settings if task in _per_task(e, s)), None)
            n = max((_per_task(e, s)[task].n for e in evals for s in settings if task in _per_task(e, s)), default=0)
            rows.append([task, *cells, str(n), pct(value(first, "chance"))])
        blocks += [("h", 3, title.split(":")[0]), ("table", ["task", *settings, "n", "chance %"], rows)]
    return blocks


def flipped(run: Run, fig_dir: Path, prefix: str) -> list[tuple]:
    evals = [e for e in run.evaluations if _per_task(e, "flipped")]
    blocks: list[tuple] = [("h", 2, "Flipped labels")]
    if not evals:
        return blocks + [("p", "No flipped-label results (the setting was not evaluated, or no task is binary).")]
    tasks = sorted({t for e in evals for t in _per_task(e, "flipped")})
    panels = [{"title": f"{title.split(':')[0]}, flipped labels", "groups": tasks,
               "series": [(e.label, [value(_per_task(e, "flipped").get(t), m) for t in tasks], [None] * len(tasks)) for e in evals],
               "chance": [next((_per_task(e, "flipped")[t].chance for e in evals if t in _per_task(e, "flipped")), None) for t in tasks]}
              for m, title in METRIC_TITLES.items()]  # fmt: skip
    blocks.append(("p", "Binary tasks with the labels of exemplars and query swapped: above chance means the model "
                        "follows the exemplars against what it knows. Symbol tuning raised this most in the paper "
                        "(+26.5 to +34.0 points)."))  # fmt: skip
    blocks.append(("img", bar_figure(fig_dir / f"{prefix}flipped.png", panels), "Flipped-label accuracy per task; dashes: chance."))
    return blocks


def algo_parts(e: Evaluation | None) -> dict[str, dict[str, AlgoSetting]]:
    return e.results.algorithmic.parts if e and e.results.algorithmic else {}


def algo_stats(e: Evaluation | None, part: str, setting: str, cat: str = "overall") -> AlgoStats | None:
    tab = (algo_parts(e).get(part) or {}).get(setting)
    if tab is None:
        return None
    return tab.overall if cat == "overall" else tab.categories.get(cat)


def _algo_rows(e: Evaluation, part: str, setting: str, cat: str) -> list[dict]:
    return [r for r in e.rows("algorithmic", setting) if r["part"] == part and cat in ("overall", r["category"])]


def algorithmic(run: Run, fig_dir: Path, prefix: str) -> list[tuple]:
    evals = [e for e in run.evaluations if e.results.algorithmic]
    blocks: list[tuple] = [("h", 2, "Algorithmic reasoning")]
    if not evals:
        return blocks + [("p", "No algorithmic results in this run (the suite was `icl`, or no evaluation ran).")]
    paired = run.base is not None and run.tuned is not None and len(evals) == 2
    b, t = (run.base, run.tuned) if paired else (evals[0], None)
    blocks.append(("p", "Greedy generation; exact = the answer line equals the target, parsed = the first list "
                        "(or quoted bit string) in the answer equals it, malformed = nothing parseable. Accuracy %"
                        + (", Δ exact with a paired bootstrap interval over queries." if paired else ".")))  # fmt: skip
    head = ["part", "setting", "category", "n"]
    if paired:
        head += ["exact % base → tuned", "Δ exact [95% CI]", "parsed % base → tuned", "malformed base → tuned"]
    else:
        head += ["exact %", "parsed %", "malformed"]
    rows, panels = [], []
    for part in dict.fromkeys(p for e in evals for p in algo_parts(e)):
        settings = list(dict.fromkeys(s for e in evals for s in algo_parts(e).get(part, {})))
        cats = list(dict.fromkeys(c for e in evals for s in settings if s in algo_parts(e).get(part, {})
                                  for c in algo_parts(e)[part][s].categories))  # fmt: skip
        groups = [*cats, "overall"]
        series = []
        for s in settings:
            for cat in groups:
                sb, st = algo_stats(b, part, s, cat), algo_stats(t, part, s, cat)
                if sb is None and st is None:
                    continue
                row = [part, s, cat, str((sb or st).n)]
                eb, et = (sb.exact_acc if sb else None), (st.exact_acc if st else None)
                if paired:
                    d = algorithmic_delta(_algo_rows(b, part, s, cat), _algo_rows(t, part, s, cat), "exact")
                    row += [arrow(eb, et, True), delta_cell(d, eb, et),
                            arrow(sb.parsed_acc if sb else None, st.parsed_acc if st else None, True),
                            f"{sb.malformed if sb else '-'} → {st.malformed if st else '-'}"]  # fmt: skip
                else:
                    row += [pct(eb), pct(sb.parsed_acc), str(sb.malformed)]
                rows.append(row)
            for e in (b, t) if paired else (b,):
                vals = [getattr(algo_stats(e, part, s, c), "exact_acc", None) for c in groups]
                series.append((f"{e.label}, {s}", vals, [None] * len(vals)))
        panels.append({"title": f"{part}: exact match by category", "groups": groups, "series": series})
    blocks.append(("table", head, rows))
    skipped = {p: why for e in evals for p, why in e.results.algorithmic.skipped.items()}
    if skipped:
        blocks.append(("ul", [f"`{p}` skipped: {why}" for p, why in skipped.items()]))
    if panels:
        blocks.append(("img", bar_figure(fig_dir / f"{prefix}algorithmic.png", panels), "Algorithmic exact match by category."))
    return blocks


def training(run: Run, fig_dir: Path, prefix: str) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Training")]
    tr = run.training
    if tr is None:
        why = [n for n in run.notes if n.startswith("tune")]
        return blocks + [("p", "No tuning stage to show: " + ("; ".join(why) if why else "this run has no tune stage") + ".")]
    facts = [f"directory: `{tr.path}`", f"log: `{tr.log_file}` ({len(tr.log)} entries)" if tr.log_file else "log: none"]
    losses = [e["loss"] for e in tr.log if "loss" in e and "step" in e]
    if losses:
        facts.append(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f}, lowest {min(losses):.4f} over {len(losses)} logged steps")
    for k, pts in sorted(evaluation_points(tr.log).items()):
        facts.append(f"`{k}` during training: " + ", ".join(f"step {s}: {v:.4g}" for s, v in pts[-6:]))
    res = (tr.summary or {}).get("results") or {}
    if tr.summary:
        facts.append(f"steps: {res.get('steps')}, mean training loss {num(res.get('train_loss'))}, "
                     f"optimizer {tr.summary.get('optimizer')}, learning rate {tr.summary.get('learning_rate')}, "
                     f"precision {tr.summary.get('precision')}, packing {(tr.summary.get('packing') or {}).get('mode')}")  # fmt: skip
        facts.append(f"tokens: {res.get('tokens')} ({res.get('target_tokens')} target) in {num(res.get('train_seconds'), 0)} s "
                     f"({num(res.get('tokens_per_s'), 0)} tokens/s)")  # fmt: skip
        data = tr.summary.get("data") or {}
        if data:
            facts.append(f"examples trained: {data.get('examples')} ({data.get('dropped_total', 0)} dropped over the length limits)")
        if res.get("stopped_by_time_limit"):
            facts.append(f"**stopped by the time limit** at {res['stopped_by_time_limit']}")
    blocks.append(("ul", facts))
    fig = loss_figure(fig_dir / f"{prefix}loss.png", tr.log, f"{run.name}: training loss")
    if fig:
        blocks.append(("img", fig, "Training loss per logged step" + (" and the numbers measured during training" if evaluation_points(tr.log) else "") + "."))
    else:
        blocks.append(("p", "The training log holds no loss entries; no curve."))
    return blocks


def num(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
