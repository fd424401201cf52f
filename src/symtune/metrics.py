"""Accuracy tables for the in-context-learning suite: per task, per setting, with intervals.

A setting's score is the macro average over tasks (as the paper's Table 1). Two kinds of uncertainty are
reported: a 95% bootstrap interval (queries resampled within each task, all trials pooled) and, with
--trials N > 1, the standard deviation of the macro average across N independent exemplar draws.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .tables import format_table

METRICS = ("acc", "acc_norm_tokens", "acc_norm_chars", "gen_acc")
BOOTSTRAP = 1000


def _mean(xs) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def summarize(samples: list[dict], chance: dict[str, float], seed: int = 0) -> dict:
    """{"per_task": {setting: {task: stats}}, "summary": {setting: stats}} from scored samples.

    Each sample has task, setting, trial, correct {metric: bool}, in_label_set (bool or None)."""
    by = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by[s["setting"]][s["task"]].append(s)
    per_task, summary = {}, {}
    rng = np.random.default_rng(seed)
    for setting, tasks in by.items():
        per_task[setting] = {}
        for task, rows in sorted(tasks.items()):
            stats = {"n": len(rows), "chance": chance[task]}
            for m in METRICS:
                vals = [r["correct"][m] for r in rows if r["correct"].get(m) is not None]
                stats[m] = _mean(vals)
            gen = [r["in_label_set"] for r in rows if r.get("in_label_set") is not None]
            stats["gen_in_label_set"] = _mean(gen)
            per_task[setting][task] = stats
        summary[setting] = _setting_summary(per_task[setting], tasks, rng)
    return {"per_task": per_task, "summary": summary}


def _setting_summary(task_stats: dict, tasks: dict, rng) -> dict:
    names = sorted(task_stats)
    out = {
        "tasks": len(names),
        "n": sum(task_stats[t]["n"] for t in names),
        "chance": float(np.mean([task_stats[t]["chance"] for t in names])),
        "gen_in_label_set": _mean([task_stats[t]["gen_in_label_set"] for t in names if task_stats[t]["gen_in_label_set"] is not None]),
    }
    for m in METRICS:
        vals = [task_stats[t][m] for t in names if task_stats[t][m] is not None]
        if len(vals) < len(names):
            out[m] = None
            continue
        out[m] = float(np.mean(vals))
        # Bootstrap: resample queries within each task, average per task, then over tasks.
        arrays = [np.array([r["correct"][m] for r in tasks[t]], dtype=float) for t in names]
        boots = np.mean([a[rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))].mean(axis=1) for a in arrays], axis=0)
        out[f"{m}_ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        trials = sorted({r["trial"] for t in names for r in tasks[t]})
        if len(trials) > 1:
            per_trial = [
                np.mean([np.mean([r["correct"][m] for r in tasks[t] if r["trial"] == k]) for t in names]) for k in trials
            ]
            out[f"{m}_trials"] = [float(x) for x in per_trial]
            out[f"{m}_trial_std"] = float(np.std(per_trial, ddof=1))
    return out


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def interval_cell(stats: dict | None, m: str, long: bool = False) -> str:
    """"48.7 [40.1, 57.0] ±3.5": the value, its 95% interval and, with several exemplar draws, their spread
    (long=True, for reports: "sd 3.5 over 2 draws")."""
    v = (stats or {}).get(m)
    if v is None:
        return "-"
    text = pct(v)
    if stats.get(f"{m}_ci95"):
        lo, hi = stats[f"{m}_ci95"]
        text += f" [{pct(lo)}, {pct(hi)}]"
    if f"{m}_trial_std" in stats:
        sd = pct(stats[f"{m}_trial_std"])
        text += f" sd {sd} over {len(stats.get(f'{m}_trials') or [])} draws" if long else f" ±{sd}"
    return text


def format_summary(result: dict, settings_meta: dict) -> str:
    """The Table-1 view: one row per setting, rank and generation accuracy with intervals, chance."""
    rows = []
    for setting, st in result["summary"].items():
        meta = settings_meta[setting]
        labels = {"natural": "yes", "symbol": "no", "flipped": "flipped"}[meta.labels]
        rows.append(
            [setting, labels, "yes" if meta.instruction else "no", interval_cell(st, "acc"), interval_cell(st, "gen_acc"),
             pct(st["gen_in_label_set"]), pct(st["chance"]), f"{st['tasks']}/{st['n']}"]
        )  # fmt: skip
    head = ["setting", "relevant labels", "instruction", "rank acc % [95% CI]", "generation acc % [95% CI]",
            "answers in label set %", "chance %", "tasks/queries"]  # fmt: skip
    return format_table(head, rows)


def format_per_task(result: dict, metric: str = "acc") -> str:
    settings = list(result["per_task"])
    tasks = sorted({t for s in settings for t in result["per_task"][s]})
    rows = []
    for t in tasks:
        cells = []
        for s in settings:
            st = result["per_task"][s].get(t)
            cells.append("-" if st is None else f"{pct(st[metric])} / {pct(st['gen_acc'])}")
        n = max((result["per_task"][s][t]["n"] for s in settings if t in result["per_task"][s]), default=0)
        rows.append([t, *cells, str(n), pct(result["per_task"][settings[0]].get(t, {}).get("chance"))])
    return format_table(["task (rank / generation %)", *settings, "n", "chance %"], rows)
