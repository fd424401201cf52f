"""Tuned-minus-base differences with a paired bootstrap interval.

Both evaluations ask the same queries when their eval configs match: a sample's id (task/setting/trial/query,
or part/subtask/row/setting) does not depend on the model. So each query is paired with itself, and the
interval resamples **queries** (with all their trials, as one cluster) within each group, the same indexes for
base and tuned, then takes the tuned-minus-base difference of the macro average over groups (tasks, like
Table 1) or of the plain average (one group, like the algorithmic tables). Pairing removes the
between-query variance that two independent intervals would double-count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

REPS = 2000


def paired_delta(
    base: list[dict],
    tuned: list[dict],
    value: Callable[[dict], bool | None],
    group: Callable[[dict], str],
    cluster: Callable[[dict], str],
    seed: int = 0,
    reps: int = REPS,
) -> dict | None:
    """{"delta", "ci95": [lo, hi], "pairs", "groups", "unpaired"} or None when no query is in both.

    value: the sample's score (None: not scored); group: the averaging unit; cluster: what is resampled (a
    query with all its trials). Only ids in both lists count; "unpaired" says how many were left out."""
    b = {s["id"]: (group(s), cluster(s), value(s)) for s in base}
    t = {s["id"]: value(s) for s in tuned}
    common = [i for i in b if i in t and b[i][2] is not None and t[i] is not None]
    if not common:
        return None
    clusters: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for i in common:
        g, c, bv = b[i]
        clusters[g][c].append((float(bv), float(t[i])))
    rng = np.random.default_rng(seed)
    point, boots = [], []
    for g in sorted(clusters):
        pairs = np.array([np.mean(v, axis=0) for v in clusters[g].values()])  # (clusters, 2): per-query means
        diff = pairs[:, 1] - pairs[:, 0]
        point.append(diff.mean())
        step = max(1, 2_000_000 // len(diff))  # bounded memory for large groups
        boots.append(np.concatenate([diff[rng.integers(0, len(diff), size=(min(step, reps - i), len(diff)))].mean(axis=1)
                                     for i in range(0, reps, step)]))  # fmt: skip
    boot = np.mean(boots, axis=0)
    return {
        "delta": float(np.mean(point)),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "pairs": len(common),
        "groups": len(point),
        "unpaired": len(b) + len(t) - 2 * len(common),
    }


def icl_delta(base_rows: list[dict], tuned_rows: list[dict], metric: str, seed: int = 0) -> dict | None:
    """Macro average over tasks, queries resampled within each task (trials of a query kept together)."""
    return paired_delta(base_rows, tuned_rows, lambda s: s["correct"].get(metric), lambda s: s["task"],
                        lambda s: f"{s['task']}/{s['query']}", seed=seed)  # fmt: skip


def algorithmic_delta(base_rows: list[dict], tuned_rows: list[dict], metric: str, seed: int = 0) -> dict | None:
    """Plain average over the queries given (as the algorithmic tables), queries resampled."""
    return paired_delta(base_rows, tuned_rows, lambda s: s.get(metric), lambda s: "all", lambda s: s["id"], seed=seed)
