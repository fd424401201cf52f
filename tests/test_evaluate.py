import json
import os
import signal
import subprocess
import sys
import time

import pytest

from symtune.cache import ResultCache
from symtune.evaluate import EvalConfig, EvalError, evaluate
from symtune.planning import plan_icl
from symtune.results import SCHEMA_VERSION, EvalResults
from symtune.scoring import HFBackend

TASKS = ["raft_overruling", "tweet_eval_stance_hillary"]


@pytest.fixture(scope="module")
def backend(tiny_model):
    model, tok = tiny_model
    return HFBackend(model, tok, batch_size=8, identity={"backend": "hf", "model": "tiny-random-llama"})


def _config(task_data, out, **kw):
    base = dict(out=str(out), data_dir=str(task_data), suite="icl", tasks=TASKS, limit=3, max_new_tokens=3)
    return EvalConfig(**{**base, **kw})


def test_plan_covers_settings_and_flips_only_binary(backend, task_data, tmp_path):
    items, report = plan_icl(_config(task_data, tmp_path), backend)
    by = {(it["task"], it["setting"]) for it in items}
    assert ("raft_overruling", "flipped") in by and ("tweet_eval_stance_hillary", "flipped") not in by
    assert len(items) == 3 * 5 + 3 * 4
    assert report["tweet_eval_stance_hillary"].query_split == "test"
    # the same queries at a smaller limit are a prefix, with identical prompts
    small, _ = plan_icl(_config(task_data, tmp_path, limit=2), backend)
    big = {it["id"]: it["prompt"] for it in items}
    assert all(big[it["id"]] == it["prompt"] for it in small)


def test_results_and_samples_written_and_consistent(backend, task_data, tmp_path):
    res = evaluate(_config(task_data, tmp_path), backend=backend, progress=False)
    assert res.complete
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["schema"] == SCHEMA_VERSION and EvalResults.load(tmp_path / "results.json") == res
    assert on_disk["icl"]["summary"]["natural"]["acc_ci95"] == res.icl.summary["natural"].ci95["acc"]  # the flat layout
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 27
    for s in samples:
        assert len(s["logprobs"]) == len(s["candidates"]) and s["gold"] in s["candidates"]
        assert s["correct"]["acc"] == (s["predictions"]["acc"] == s["gold"])
        assert s["correct"]["gen_acc"] == (s["gen_prediction"] == s["gold"])
    summary = res.icl.summary["natural"]
    per_task = res.icl.per_task["natural"]
    assert summary.acc == pytest.approx(sum(t.acc for t in per_task.values()) / 2)
    assert summary.chance == pytest.approx((1 / 2 + 1 / 3) / 2)
    lo, hi = summary.ci95["acc"]
    assert lo <= summary.acc <= hi


def test_rerun_reuses_cache_and_changed_config_does_not(backend, task_data, tmp_path):
    evaluate(_config(task_data, tmp_path), backend=backend, progress=False)
    before = backend.stats["requests"]
    res = evaluate(_config(task_data, tmp_path), backend=backend, progress=False)
    assert backend.stats["requests"] == before and res.timing.resumed_from_cache == 54
    evaluate(_config(task_data, tmp_path, k=2), backend=backend, progress=False)  # other prompts: new keys
    assert backend.stats["requests"] - before == 27


def test_cache_key_includes_model_identity(backend, task_data, tmp_path, tiny_model):
    evaluate(_config(task_data, tmp_path, generate=False, settings=["natural"]), backend=backend, progress=False)
    other = HFBackend(*tiny_model, identity={"backend": "hf", "model": "another"})
    evaluate(_config(task_data, tmp_path, generate=False, settings=["natural"]), backend=other, progress=False)
    assert other.stats["requests"] == 6


def test_one_pass_scoring_equals_separate_calls(backend):
    reqs = [("Input: a b c\nOutput:", [" yes", " no way"]), ("Input: the quick brown fox jumps\nOutput:", [" ABC", " 12345"])]
    scores, gens = backend.score_and_generate(reqs, 5, ["\n"])
    assert gens == backend.generate([p for p, _ in reqs], 5, ["\n"])
    for a, b in zip(scores, backend.loglikelihoods(reqs)):
        assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-5)


def test_torn_cache_line_is_dropped(tmp_path):
    c = ResultCache(tmp_path / "c.jsonl")
    c.put_many({"a": 1, "b": 2})
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"key": "c", "val')
    c2 = ResultCache(tmp_path / "c.jsonl")
    assert c2.values == {"a": 1, "b": 2}
    c2.put_many({"d": 4})
    assert ResultCache(tmp_path / "c.jsonl").values == {"a": 1, "b": 2, "d": 4}


def test_trials_give_spread_and_differ(backend, task_data, tmp_path):
    res = evaluate(_config(task_data, tmp_path, trials=2, generate=False, settings=["symbol"]), backend=backend, progress=False)
    st = res.icl.summary["symbol"]
    assert len(st.trials["acc"]) == 2 and "acc" in st.trial_std


def test_bad_config_errors():
    with pytest.raises(EvalError, match="unknown suite"):
        EvalConfig(suite="mmlu")
    with pytest.raises(ValueError, match="unknown setting"):
        EvalConfig(settings=["natural", "upside-down"])


def test_context_budget_drops_exemplars_and_reports(backend, task_data, tmp_path):
    # the fixture's stance prompts with 4 exemplars per class take about 270 tokens
    items, report = plan_icl(_config(task_data, tmp_path, max_tokens=200, settings=["natural"]), backend)
    info = report["tweet_eval_stance_hillary"]
    assert info.trimmed > 0 or info.skipped
    assert all(backend.count_tokens(it["prompt"] + " " + it["gold"]) <= 200 for it in items)


@pytest.mark.slow
def test_cli_killed_midway_resumes_without_redoing(tiny_dir, task_data, tmp_path):
    """kill -9 during a run, rerun: finished queries come from the cache, the result is complete."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "symtune.cli", "eval", "--model", str(tiny_dir), "--suite", "icl", "--data-dir",
           str(task_data), "--tasks", "raft_overruling", "sst2", "--limit", "50", "--settings", "natural", "symbol",
           "--no-generate", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    cache = out / "cache.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (cache.exists() and cache.read_text().count("\n") >= 1):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = cache.read_text().count("\n")
    assert 1 <= done < 200 and not (out / "results.json").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = EvalResults.load(out / "results.json")
    assert res.complete and res.timing.resumed_from_cache == done
    assert res.icl.summary["natural"].n == 100


def test_shared_exemplar_protocol(backend, task_data, tmp_path):
    """--exemplars shared: every query of a task, setting and trial sees the same exemplars, so their prompts
    share a prefix that the backend forwards once; the protocol is recorded."""
    cfg = _config(task_data, tmp_path, exemplars="shared", limit=6, settings=["symbol"], generate=False)
    items, _ = plan_icl(cfg, backend)
    by_task = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it["prompt"])
    for prompts in by_task.values():
        cut = prompts[0].rindex("Input:")
        assert all(p[:cut] == prompts[0][:cut] for p in prompts)  # everything before the query
    before = backend.stats["shared_prefix_tokens"]
    res = evaluate(cfg, backend=backend, progress=False)
    assert backend.stats["shared_prefix_tokens"] > before
    assert res.config["exemplars"] == "shared"
    with pytest.raises(EvalError, match="exemplar protocol"):
        _config(task_data, tmp_path, exemplars="per-task")


def test_symbol_pool_choice(backend, task_data, tmp_path):
    """--symbols tune draws the symbol settings' labels from the tuning pool (a diagnostic), heldout by default."""
    from symtune.symbols import SymbolPool

    held = {x for it in plan_icl(_config(task_data, tmp_path, settings=["symbol"]), backend)[0] for x in it["labels"]}
    tune = {x for it in plan_icl(_config(task_data, tmp_path, settings=["symbol"], symbols="tune"), backend)[0]
            for x in it["labels"]}
    assert held <= SymbolPool("heldout").all() and tune <= SymbolPool("tune").all()
    assert not tune & SymbolPool("heldout").all()  # the two pools are disjoint
    with pytest.raises(EvalError, match="symbol pool"):
        _config(task_data, tmp_path, symbols="mine")
