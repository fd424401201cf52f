"""Tuned-minus-base differences with a paired bootstrap interval.

Both evaluations ask the same queries when their eval configs match: a sample's id (task/setting/trial/query,
or part/subtask/row/setting) does not depend on the model. So each query is paired with itself, and the
interval resamples **queries** (with all their trials, as one cluster) within each group, the same indexes for
base and tuned, then takes the tuned-minus-base difference of the macro average over groups (tasks, like
Table 1) or of the plain average (one group, like the algorithmic tables). Pairing removes the
between-query variance that two independent intervals would double-count.

Two intervals, each labelled where it is shown: **queries** (the tasks fixed: what these tasks would give with
other queries) and **tasks + queries** (tasks resampled too, then queries within each drawn task: what other
tasks of the same kind would give; wider, and the one a claim about "new tasks" needs). Beside each, the minimum
detectable effect at 80% power and a two-sided 5% test, MDE = (z_0.975 + z_0.8) x the bootstrap standard
error: a true difference smaller than this would be missed more often than one time in five.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

REPS = 2000
Z_POWER = 1.959964 + 0.841621  # z_{1-0.05/2} + z_{0.80}: a two-sided 5% test with 80% power


def mde(se: float) -> float:
    """The minimum detectable effect at 80% power of a difference measured with standard error se."""
    return Z_POWER * se


def queries_for_mde(n_queries: float, mde_now: float, target: float) -> int:
    """Queries per task that bring a query-level MDE of mde_now (measured with n_queries per task) to target:
    the standard error falls as 1/sqrt(n), so n x (mde_now / target)^2, rounded up."""
    if target <= 0:
        raise ValueError(f"the target MDE must be > 0 points, got {target}")
    return int(np.ceil(n_queries * (mde_now / target) ** 2 - 1e-9))


def paired_delta(
    base: list[dict],
    tuned: list[dict],
    value: Callable[[dict], bool | None],
    group: Callable[[dict], str],
    cluster: Callable[[dict], str],
    seed: int = 0,
    reps: int = REPS,
) -> dict | None:
    """{"delta", "ci95": [lo, hi], "se", "mde80", "ci95_tasks", "se_tasks", "mde80_tasks", "pairs", "groups",
    "queries", "unpaired"} or None when no query is in both.

    value: the sample's score (None: not scored); group: the averaging unit; cluster: what is resampled (a
    query with all its trials). ci95/se/mde80 resample clusters within each group (groups fixed); the *_tasks
    keys resample groups as well (None with one group). "queries": clusters per group on average. Only ids in
    both lists count; "unpaired" says how many were left out."""
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
    out = {
        "delta": float(np.mean(point)),
        "ci95": _interval(boot),
        "se": float(np.std(boot, ddof=1)),
        "pairs": len(common),
        "groups": len(point),
        "queries": float(np.mean([len(clusters[g]) for g in clusters])),
        "unpaired": len(b) + len(t) - 2 * len(common),
    }
    out["mde80"] = mde(out["se"])
    out["ci95_tasks"] = out["se_tasks"] = out["mde80_tasks"] = None
    if len(point) > 1:
        # Two stages: draw groups with replacement, then for each drawn group an independent query resample (a
        # column of its own bootstrap draws), so a group drawn twice does not count the same resample twice.
        stacked = np.stack(boots)  # (groups, reps)
        which = rng.integers(0, len(point), size=(reps, len(point)))
        column = rng.integers(0, reps, size=(reps, len(point)))
        two_stage = stacked[which, column].mean(axis=1)
        out["ci95_tasks"] = _interval(two_stage)
        out["se_tasks"] = float(np.std(two_stage, ddof=1))
        out["mde80_tasks"] = mde(out["se_tasks"])
    return out


def _interval(boot: np.ndarray) -> list[float]:
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def icl_delta(base_rows: list[dict], tuned_rows: list[dict], metric: str, seed: int = 0) -> dict | None:
    """Macro average over tasks, queries resampled within each task (trials of a query kept together)."""
    return paired_delta(base_rows, tuned_rows, lambda s: s["correct"].get(metric), lambda s: s["task"],
                        lambda s: f"{s['task']}/{s['query']}", seed=seed)  # fmt: skip


def algorithmic_delta(base_rows: list[dict], tuned_rows: list[dict], metric: str, seed: int = 0) -> dict | None:
    """Plain average over the queries given (as the algorithmic tables), queries resampled."""
    return paired_delta(base_rows, tuned_rows, lambda s: s.get(metric), lambda s: "all", lambda s: s["id"], seed=seed)
