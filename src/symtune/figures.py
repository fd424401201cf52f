"""PNG figures with matplotlib's object API on the Agg canvas (no pyplot: no global backend, no GUI): the loss
curve, drawn by tuning and by the report, and what every figure shares (colours, writing a PNG whole). It sits
below tune/ and report/; the report's own figures are in report/figures.py."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .files import write_atomic

COLORS = ("#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def save_png(fig: Figure, path: Path) -> Path:
    """The figure as a PNG at `path`, put in place whole (a report never links a half-written image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(path, buf.getvalue())
    return path


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
