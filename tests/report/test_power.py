"""Power next to every paired interval: the MDE arithmetic, the tasks + queries interval, sizing from a pilot."""

from __future__ import annotations

import numpy as np
import pytest

from symtune.report.paired import Z_POWER, icl_delta, mde, queries_for_mde
from symtune.report.sections import sizing


def _samples(effects: list[float], n: int, seed: int, base_p: float = 0.5) -> tuple[list[dict], list[dict]]:
    """Base and tuned samples over len(effects) tasks with n queries each; the tuned model is right with
    probability base_p + the task's effect, independently of the base."""
    rng = np.random.default_rng(seed)
    base, tuned = [], []
    for t, eff in enumerate(effects):
        for q in range(n):
            for rows, p in ((base, base_p), (tuned, base_p + eff)):
                rows.append({"id": f"t{t}/symbol/0/{q}", "task": f"t{t}", "query": q,
                             "correct": {"gen_acc": bool(rng.random() < p)}})
    return base, tuned


def test_mde_is_z_sum_times_se():
    assert Z_POWER == pytest.approx(2.8016, abs=1e-4)
    assert mde(0.05) == pytest.approx(0.14008, abs=1e-5)


def test_queries_for_mde_scales_with_the_square_and_rejects_nonsense():
    assert queries_for_mde(20, 10.0, 5.0) == 80
    assert queries_for_mde(20, 10.0, 10.0) == 20
    assert queries_for_mde(20, 10.0, 20.0) == 5
    with pytest.raises(ValueError, match="target MDE"):
        queries_for_mde(20, 10.0, 0)


def test_paired_se_matches_the_analytic_standard_error():
    base, tuned = _samples([0.1] * 10, n=200, seed=1)
    d = icl_delta(base, tuned, "gen_acc")
    # analytic: the macro mean's SE = sqrt(mean over tasks of var(diff)/n) / sqrt(tasks)
    per_task = [np.var([float(t["correct"]["gen_acc"]) - float(b["correct"]["gen_acc"])
                        for b, t in zip(base, tuned) if b["task"] == f"t{k}"]) / 200 for k in range(10)]  # fmt: skip
    analytic = np.sqrt(np.sum(per_task)) / 10
    assert d["se"] == pytest.approx(analytic, rel=0.1)
    assert d["mde80"] == pytest.approx(Z_POWER * d["se"])
    assert d["queries"] == 200 and d["groups"] == 10


def test_tasks_interval_widens_only_when_tasks_differ():
    d_same = icl_delta(*_samples([0.1] * 12, n=60, seed=2), "gen_acc")
    spread = _samples([-0.3, 0.4] * 6, n=60, seed=2)
    d_spread = icl_delta(*spread, "gen_acc")
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    # identical effects: the between-task part adds little; effects of -30 / +40 points: it dominates
    assert width(d_same["ci95_tasks"]) < 1.6 * width(d_same["ci95"])
    assert width(d_spread["ci95_tasks"]) > 2 * width(d_spread["ci95"])
    assert d_spread["mde80_tasks"] > 2 * d_spread["mde80"]


def test_one_group_has_no_tasks_interval():
    base, tuned = _samples([0.1], n=50, seed=3)
    d = icl_delta(base, tuned, "gen_acc")
    assert d["ci95_tasks"] is None and d["mde80_tasks"] is None and d["mde80"] > 0


def test_sizing_from_a_pilot_predicts_the_mde_of_the_larger_evaluation():
    effects = [0.05] * 11
    pilot = icl_delta(*_samples(effects, n=20, seed=4), "gen_acc")
    target = 100 * pilot["mde80"] / 2  # half the pilot's MDE: four times the queries
    head, rows = sizing({("symbol", "gen_acc"): pilot, ("symbol", "acc"): pilot}, target)
    assert len(rows) == 1 and rows[0][0] == "symbol"
    need = int(rows[0][-1])
    assert need == queries_for_mde(20, 100 * pilot["mde80"], target) and 78 <= need <= 82
    bigger = icl_delta(*_samples(effects, n=need, seed=5), "gen_acc")
    assert 100 * bigger["mde80"] == pytest.approx(target, rel=0.15)


def test_changed_answers_counts_paired_queries_whose_answer_differs():
    from symtune.report.sections import changed_answers

    base = [{"id": str(i), "gen_prediction": a} for i, a in enumerate(["x", "y", "z", "x"])]
    tuned = [{"id": str(i), "gen_prediction": a} for i, a in enumerate(["x", "q", "z", "y"])] + [{"id": "9", "gen_prediction": "x"}]
    assert changed_answers(base, tuned) == 0.5  # 2 of the 4 paired queries; the unpaired one is left out
    assert changed_answers(base, []) is None
