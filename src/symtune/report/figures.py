"""PNG figures with matplotlib's object API on the Agg canvas (no pyplot: no global backend, no GUI)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..files import write_atomic

COLORS = ("#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def save_png(fig: Figure, path: Path) -> Path:
    """The figure as a PNG at `path`, put in place whole (a report never links a half-written image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(path, buf.getvalue())
    return path


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


def loss_figure(path: Path, log: list[dict], title: str) -> Path | None:
    """Training loss per step (raw and a running mean) and, if the log has them, the numbers measured during
    training (`eval_*` from the Trainer, `icl/*` from symtune's evaluation hook) in a second panel."""
    losses = [(e["step"], e["loss"]) for e in log if "loss" in e and "step" in e]
    evals = evaluation_points(log)
    if not losses and not evals:
        return None
    fig = Figure(figsize=(7.5, 3.3 * (1 + bool(evals))))
    axes = fig.subplots(1 + bool(evals), 1, squeeze=False, sharex=True)[:, 0]
    ax = axes[0]
    if losses:
        steps, values = zip(*losses)
        ax.plot(steps, values, lw=1, alpha=0.5, color=COLORS[1], label="loss")
        w = max(len(values) // 10, 1)
        if w > 1:
            run = [sum(values[max(0, i - w + 1) : i + 1]) / len(values[max(0, i - w + 1) : i + 1]) for i in range(len(values))]
            ax.plot(steps, run, lw=2, color=COLORS[2], label=f"mean of last {w} logs")
        ax.legend(fontsize=8)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats / target token)", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if evals:
        ax2 = axes[1]
        for j, (k, pts) in enumerate(sorted(evals.items())):
            ax2.plot(*zip(*pts), marker="o", ms=3, color=COLORS[(j + 1) % len(COLORS)], label=k)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("step")
        ax2.set_ylabel("measured during training", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


EVAL_NOISE = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "icl/seconds")


def evaluation_points(log: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{name: [(step, value)]} for the numbers measured during training."""
    out: dict[str, list[tuple[int, float]]] = {}
    for e in log:
        for k, v in e.items():
            if (k.startswith("eval_") or k.startswith("icl/")) and k not in EVAL_NOISE and isinstance(v, (int, float)):
                out.setdefault(k, []).append((e.get("step", 0), float(v)))
    return out


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
