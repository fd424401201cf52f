"""The GPU study's driver (scripts/gpu_study.py) end to end on a CPU: a tiny random Llama, the synthetic task data,
token budgets of a few thousand. What a GPU session relies on: the results folder's files, a plan that keeps
time for the evaluations (a budget too small to tune still evaluates the base), and a rerun that resumes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from symtune.report.runs import read_jsonl

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_study.py"


@pytest.fixture(scope="module")
def gpu_study():
    sys.path.insert(0, str(SCRIPT.parent))  # the pool's workers import it by this name
    spec = importlib.util.spec_from_file_location("gpu_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_study"] = module
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(SCRIPT.parent))


def _args(gpu_study, tiny_dir, task_data, out: Path, budget: float):
    return gpu_study.parse_args(["--smoke", "--model", str(tiny_dir), "--data-dir", str(task_data), "--out", str(out),
                                 "--device", "cpu", "--budget-s", str(budget)])


def test_driver_writes_results_at_each_budget_and_resumes(gpu_study, tiny_dir, task_data, tmp_path):
    out = tmp_path / "results"
    summary = gpu_study.Study(_args(gpu_study, tiny_dir, task_data, out, budget=600)).run()
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= gpu_study.RESULT_FILES
    assert {"summary.json", "samples-base.jsonl.gz", "samples-symbol.jsonl.gz", "samples-natural.jsonl.gz",
            "samples-random.jsonl.gz", "train-logs.jsonl.gz"} <= set(names)
    assert summary["status"] == "complete" and summary["not_evaluated"] == []
    plan, models = summary["plan"], summary["models"]
    assert plan["symbol_tokens"] == 2000 and plan["control_tokens"] == 1000
    recipes = {m["recipe"] for m in models.values()}
    assert recipes == {"base", "symbol", "natural", "random"}
    symbol = sorted(m["tokens"] for m in models.values() if m["recipe"] == "symbol")
    assert len(symbol) == 2 and symbol[-1] >= 2000  # a checkpoint at each budget; the largest reached
    for key, m in models.items():
        assert m["tasks"] == ["rte", "sst2"]
        assert set(m["accuracy"]) == {"natural+instr", "natural", "symbol+instr", "symbol", "flipped"}
        if key != "base":
            d = m["delta_vs_base"]["symbol"]["gen_acc"]
            assert {"delta", "ci95", "se", "mde80", "ci95_tasks"} <= set(d) and d["pairs"] > 0
    assert len(summary["symbol_vs_controls"]) == 2
    top = max((k for k, m in models.items() if m["recipe"] == "symbol"), key=lambda k: models[k]["tokens"])
    assert summary["targets"]["model"] == top and summary["targets"]["metric"] == "gen_acc"
    assert all(isinstance(v, bool) for k, v in summary["targets"].items() if k not in ("model", "tokens", "metric"))
    rows = read_jsonl(out / "samples-symbol.jsonl")
    assert {r["model"] for r in rows} == {k for k, m in models.items() if m["recipe"] == "symbol"}
    assert len(read_jsonl(out / "samples-base.jsonl")) == len(rows) // 2

    # A rerun with the same work folder skips every finished stage and writes the same numbers.
    work = Path(str(out) + "-work")
    mtimes = {p: p.stat().st_mtime_ns for p in (work / "tune").rglob("model.safetensors")}
    assert mtimes  # the tuned models are there to be left alone
    again = gpu_study.Study(_args(gpu_study, tiny_dir, task_data, out, budget=600)).run()
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    log = (out / "log.txt").read_text()
    assert "mixtures: done earlier, skipped" in log and "tune natural: done earlier, skipped" in log
    assert again["models"].keys() == models.keys()
    assert again["models"]["symbol@3"]["delta_vs_base"] == models["symbol@3"]["delta_vs_base"]


def test_a_budget_too_small_to_tune_still_evaluates_the_base(gpu_study, tiny_dir, task_data, tmp_path):
    out = tmp_path / "results"
    summary = gpu_study.Study(_args(gpu_study, tiny_dir, task_data, out, budget=1)).run()
    assert summary["plan"]["symbol_tokens"] == 0 and "no tuning" in summary["plan"]["note"]
    assert list(summary["models"]) == ["base"] and summary["models"]["base"]["tasks"] == ["rte", "sst2"]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "samples-base.jsonl.gz", "summary.json"]
