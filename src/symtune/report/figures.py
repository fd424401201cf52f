"""The report's own figures (grouped bars, paired deltas). What they share with tuning's loss curve (colours,
writing a PNG whole, the loss figure itself) is in `symtune.figures`, below both, and re-exported here."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from ..figures import COLORS, EVAL_NOISE, evaluation_points, loss_figure, save_png


def _nan(x):
    return math.nan if x is None else 100 * x


def bar_figure(path: Path, panels: list[dict], width: float | None = None) -> Path:
    """Grouped bars, one panel per dict: {"title", "groups": [names], "series": [(name, [value], [(lo, hi) or
    None])], "chance": [value or None per group], "ylabel"}. Values are fractions, drawn as %; chance is a black
    dash over each group."""
    bars = max(len(p["groups"]) * len(p["series"]) for p in panels)
    fig = Figure(figsize=(width or min(16.0, max(7.0, 0.3 * bars + 4)), 3.4 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, panels):
        k = len(p["series"])
        w = 0.8 / k
        for j, (name, values, cis) in enumerate(p["series"]):
            xs = [i + (j - (k - 1) / 2) * w for i in range(len(p["groups"]))]
            ys = [_nan(v) for v in values]
            lo = [0 if c is None or v is None else max(0, 100 * (v - c[0])) for v, c in zip(values, cis)]
            hi = [0 if c is None or v is None else max(0, 100 * (c[1] - v)) for v, c in zip(values, cis)]
            bars = ax.bar(xs, ys, w, label=name, color=COLORS[j % len(COLORS)], yerr=[lo, hi], capsize=2,
                          error_kw={"elinewidth": 0.8, "alpha": 0.7})  # fmt: skip
            if len(p["groups"]) * k <= 40:  # values on the bars (a 0 is otherwise invisible)
                ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.0f}" for y in ys], fontsize=6, padding=1)
        for i, c in enumerate(p.get("chance") or []):
            if c is not None:
                ax.hlines(100 * c, i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1,
                          label="chance" if i == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(p["groups"])))
        ax.set_xticklabels(p["groups"], rotation=20 if max(map(len, p["groups"])) > 12 else 0, ha="right"
                           if max(map(len, p["groups"])) > 12 else "center", fontsize=8)  # fmt: skip
        ax.set_ylim(0, 105)
        ax.set_ylabel(p.get("ylabel", "accuracy %"), fontsize=9)
        ax.set_title(p["title"], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_png(fig, path)


def delta_figure(path: Path, groups: list[str], series: list[tuple[str, list[dict | None]]], title: str) -> Path:
    """Tuned-minus-base differences, one row per group (setting) and a marker per series (run): the point, its
    paired 95% interval (thick) and the interval with tasks resampled too (thin), in points; the grey band is
    ± the query-level MDE of the first series' row (smaller true effects are missed more often than 1 in 5)."""
    k = len(series)
    fig = Figure(figsize=(8.0, 0.32 * len(groups) * max(k, 2) + 1.4))
    ax = fig.subplots()
    h = 0.8 / k
    for i, _ in enumerate(groups):
        first = next((d for _, ds in series if (d := ds[i]) and d.get("mde80")), None)
        if first:
            ax.fill_betweenx([i - 0.45, i + 0.45], -100 * first["mde80"], 100 * first["mde80"], color="#eeeeee", lw=0,
                             label="± MDE (80% power)" if i == 0 else None)  # fmt: skip
    for j, (name, ds) in enumerate(series):
        ys = [i - 0.4 + h * (j + 0.5) for i in range(len(groups))]
        color = COLORS[(j + 1) % len(COLORS)]
        for y, d in zip(ys, ds):
            if not d:
                continue
            if d.get("ci95_tasks"):
                ax.hlines(y, 100 * d["ci95_tasks"][0], 100 * d["ci95_tasks"][1], color=color, lw=0.8, alpha=0.6)
            ax.hlines(y, 100 * d["ci95"][0], 100 * d["ci95"][1], color=color, lw=2.6)
        xs = [math.nan if d is None else 100 * d["delta"] for d in ds]
        ax.plot(xs, ys, "o", color=color, ms=5, label=name)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels(groups, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("Δ accuracy, tuned − base (points): paired 95% interval (thick), tasks + queries (thin)", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["COLORS", "EVAL_NOISE", "bar_figure", "delta_figure", "evaluation_points", "loss_figure", "save_png"]
