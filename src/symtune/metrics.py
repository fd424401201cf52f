"""Accuracy tables for the in-context-learning suite: per task, per setting, with intervals.

A setting's score is the macro average over tasks (as the paper's Table 1). Two kinds of uncertainty are
reported: a 95% bootstrap interval (queries resampled within each task, all trials pooled) and, with
--trials N > 1, the standard deviation of the macro average across N independent exemplar draws.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .results import METRICS, IclResults, Stats
from .tables import format_table

BOOTSTRAP = 1000


def _mean(xs) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def summarize(samples: list[dict], chance: dict[str, float], seed: int = 0) -> IclResults:
    """Per setting, per task and the macro average over tasks, from scored samples.

    Each sample has task, setting, trial, correct {metric: bool}, in_label_set (bool or None)."""
    by = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by[s["setting"]][s["task"]].append(s)
    per_task, summary = {}, {}
    rng = np.random.default_rng(seed)
    for setting, tasks in by.items():
        per_task[setting] = {}
        for task, rows in sorted(tasks.items()):
            values = {m: _mean([r["correct"][m] for r in rows if r["correct"].get(m) is not None]) for m in METRICS}
            gen = [r["in_label_set"] for r in rows if r.get("in_label_set") is not None]
            per_task[setting][task] = Stats(n=len(rows), chance=chance[task], **values, gen_in_label_set=_mean(gen))
        summary[setting] = _setting_summary(per_task[setting], tasks, rng)
    return IclResults(per_task, summary)


def _setting_summary(task_stats: dict[str, Stats], tasks: dict, rng) -> Stats:
    names = sorted(task_stats)
    out = Stats(
        tasks=len(names),
        n=sum(task_stats[t].n for t in names),
        chance=float(np.mean([task_stats[t].chance for t in names])),
        gen_in_label_set=_mean([task_stats[t].gen_in_label_set for t in names if task_stats[t].gen_in_label_set is not None]),
    )
    for m in METRICS:
        vals = [task_stats[t].value(m) for t in names if task_stats[t].value(m) is not None]
        if len(vals) < len(names):
            continue  # not scored for every task: no macro average
        setattr(out, m, float(np.mean(vals)))
        # Bootstrap: resample queries within each task, average per task, then over tasks.
        arrays = [np.array([r["correct"][m] for r in tasks[t]], dtype=float) for t in names]
        boots = np.mean([a[rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))].mean(axis=1) for a in arrays], axis=0)
        out.ci95[m] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        trials = sorted({r["trial"] for t in names for r in tasks[t]})
        if len(trials) > 1:
            per_trial = [
                np.mean([np.mean([r["correct"][m] for r in tasks[t] if r["trial"] == k]) for t in names]) for k in trials
            ]
            out.trials[m] = [float(x) for x in per_trial]
            out.trial_std[m] = float(np.std(per_trial, ddof=1))
    return out


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def interval_cell(stats: Stats | None, m: str, long: bool = False) -> str:
    """"48.7 [40.1, 57.0] ±3.5": the value, its 95% interval and, with several exemplar draws, their spread
    (long=True, for reports: "sd 3.5 over 2 draws")."""
    v = stats.value(m) if stats else None
    if v is None:
        return "-"
    text = pct(v)
    if m in stats.ci95:
        lo, hi = stats.ci95[m]
        text += f" [{pct(lo)}, {pct(hi)}]"
    if m in stats.trial_std:
        sd = pct(stats.trial_std[m])
        text += f" sd {sd} over {len(stats.trials.get(m) or [])} draws" if long else f" ±{sd}"
    return text


def format_summary(icl: IclResults, settings_meta: dict) -> str:
    """The Table-1 view: one row per setting, rank and generation accuracy with intervals, chance."""
    rows = []
    for setting, st in icl.summary.items():
        meta = settings_meta[setting]
        labels = {"natural": "yes", "symbol": "no", "flipped": "flipped"}[meta.labels]
        rows.append(
            [setting, labels, "yes" if meta.instruction else "no", interval_cell(st, "acc"), interval_cell(st, "gen_acc"),
             pct(st.gen_in_label_set), pct(st.chance), f"{st.tasks}/{st.n}"]
        )  # fmt: skip
    head = ["setting", "relevant labels", "instruction", "rank acc % [95% CI]", "generation acc % [95% CI]",
            "answers in label set %", "chance %", "tasks/queries"]  # fmt: skip
    return format_table(head, rows)


def format_per_task(icl: IclResults, metric: str = "acc") -> str:
    settings = list(icl.per_task)
    tasks = sorted({t for s in settings for t in icl.per_task[s]})
    rows = []
    for t in tasks:
        cells = []
        for s in settings:
            st = icl.per_task[s].get(t)
            cells.append("-" if st is None else f"{pct(st.value(metric))} / {pct(st.gen_acc)}")
        n = max((icl.per_task[s][t].n for s in settings if t in icl.per_task[s]), default=0)
        first = icl.per_task[settings[0]].get(t)
        rows.append([t, *cells, str(n), pct(first.chance if first else None)])
    return format_table(["task (rank / generation %)", *settings, "n", "chance %"], rows)
