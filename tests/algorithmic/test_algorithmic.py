"""Algorithmic suite: BIG-bench loading, exemplar/query separation, determinism, scoring, tables.

The tests read a synthetic sample in BIG-bench's layout (tests/fixtures/data/bigbench_sample); real BIG-bench
examples are read from the local data only, never written here (they carry a canary string).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from symtune.algorithmic import (
    CATEGORIES,
    BigBenchError,
    build_algorithmic_requests,
    categorize,
    find_bigbench_dir,
    format_algorithmic_tables,
    load_bigbench,
    score_algorithmic,
    score_generation,
)
from symtune.algorithmic.concepts import parse_comment, program_length
from symtune.algorithmic.suite import token_budgets

LISTS = ("list_functions",)


@pytest.fixture(scope="module")
def bb(task_data):
    return find_bigbench_dir(task_data)


def _read(path):
    with open(path) as f:
        return json.load(f)


# ---- loading


def test_find_bigbench_dir(task_data, bb, tmp_path):
    assert bb == task_data / "bigbench_sample"
    assert find_bigbench_dir(bb) == bb
    assert find_bigbench_dir(tmp_path) is None
    assert find_bigbench_dir(None) is None


def test_load_list_functions_sample(bb):
    subs = load_bigbench("list_functions", bb)
    assert [s.name for s in subs] == [f"c{i:03d}" for i in range(1, 6)]
    for s in subs:
        raw = _read(bb / "list_functions" / s.name / "task.json")
        assert s.examples == raw["examples"] and len(s.examples) == 32
        assert s.task_prefix == raw["task_prefix"].strip() and s.task_prefix
        assert s.rule and s.rule in raw["description"] and '"' not in s.rule
    assert subs[0].rule == "keep only element 2"
    # c001-c005 all keep a part of the list ("keep only ...", "the first 3 elements", "elements 2 through ...")
    assert {categorize(s.rule) for s in subs} == {"removing"}


def test_load_simp_turing_concept_sample(bb):
    (sub,) = load_bigbench("simp_turing_concept", bb)
    raw = _read(bb / "simp_turing_concept" / "witness_set" / "task.json")
    assert sub.name == "witness_set" and sub.examples == raw["examples"]
    for ex in sub.examples:
        program, stated = parse_comment(ex["comment"])
        assert program_length(program) == stated  # a loop's [ and ] count one each (">[o>]" has 5)
        assert ex["input"].rstrip().endswith("Output:")


def test_program_length_agrees_with_bigbench(data_dir):
    """Our program length is BIG-bench's own count (the comment's second field) on every concept of the real sample."""
    (sub,) = load_bigbench("simp_turing_concept", find_bigbench_dir(data_dir))
    assert len(sub.examples) >= 50
    for ex in sub.examples:
        program, stated = parse_comment(ex["comment"])
        assert program_length(program) == stated, ex["comment"]


def test_load_task_with_top_level_examples_and_errors(tmp_path):
    d = tmp_path / "simp_turing_concept"
    d.mkdir()
    (d / "task.json").write_text(json.dumps({"name": "x", "description": "d", "examples": [
        {"input": "Input: '1'\nOutput:", "target": "'0'", "comment": "['-o', 2, 1]"}]}))  # fmt: skip
    (sub,) = load_bigbench("simp_turing_concept", tmp_path)
    assert sub.name == "simp_turing_concept" and sub.examples[0]["target"] == "'0'"

    (d / "task.json").write_text("{not json")
    with pytest.raises(BigBenchError, match="cannot read"):
        load_bigbench("simp_turing_concept", tmp_path)
    (d / "task.json").write_text(json.dumps({"name": "x", "examples": [{"input": "a"}]}))
    with pytest.raises(BigBenchError, match="lack a string input or target"):
        load_bigbench("simp_turing_concept", tmp_path)
    with pytest.raises(BigBenchError, match="no list_functions/task.json under"):
        load_bigbench("list_functions", tmp_path)
    with pytest.raises(BigBenchError, match="unsupported"):
        load_bigbench("arithmetic", tmp_path)


def test_hub_errors_are_clear(monkeypatch, tmp_path):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BigBenchError, match=r"tasksource/bigbench.*ConnectionError.*--data-dir"):
        load_bigbench("simp_turing_concept", tmp_path, hub=True)
    with pytest.raises(BigBenchError, match="no subtask names"):
        load_bigbench("list_functions", tmp_path, hub=True)


def test_hub_simp_turing_concept_without_comments(monkeypatch, tmp_path):
    import datasets

    rows = {"train": [{"inputs": "\n\nInput: '1'\nOutput: '0'\n\nInput: '11'\nOutput:", "targets": ["'00'"]},
                      {"inputs": "Input: ''\nOutput:", "targets": []}]}  # fmt: skip
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    plan = build_algorithmic_requests(tmp_path, hub=True, parts=["simp_turing_concept"], max_program_length=None)
    (r,) = plan.requests
    assert r.prompt == "Input: '1'\nOutput: '0'\n\nInput: '11'\nOutput:" and r.target == "'00'"
    assert r.subtask == "hub-train" and r.category == "length unknown"
    plan = build_algorithmic_requests(tmp_path, hub=True, parts=["simp_turing_concept"])
    assert not plan.requests and "without a `comment`" in plan.skipped["simp_turing_concept"]


def test_missing_bigbench_is_skipped_with_reason_generated_still_run(tmp_path):
    plan = build_algorithmic_requests(tmp_path, seed=0, limit=1)
    assert set(plan.skipped) == {"list_functions", "simp_turing_concept"}
    assert "no list_functions/task.json" in plan.skipped["list_functions"]
    assert {r.part for r in plan.requests} == {"gen_list", "gen_concept"}


def test_categorize_rules():
    cases = {
        "remove all but element 3": "removing",
        "keep only elements divisible by 3": "removing",
        "elements 2 through 4": "removing",
        "replace element 2 with an 8": "modifying",
        "insert a 5 as element 2": "modifying",
        "concatenate input with itself": "modifying",
        "swap elements 1 and 4": "reordering",
        "swap the digits of each element": "modifying",  # swaps digits, not elements
        "elements in reverse order": "reordering",
        "left-rotate by 1": "reordering",
        "reverse the input and keep only even elements": "reordering",  # the first operation decides
        "input length": "counting",
        "sum of elements": "counting",
        "count from 1 to the last element": "counting",
        "the list [5, 2]": "constant",
    }
    assert {r: categorize(r) for r in cases} == cases
    assert set(cases.values()) == set(CATEGORIES)


# ---- requests: separation, settings, determinism


@pytest.fixture(scope="module")
def plan(bb):
    return build_algorithmic_requests(bb, seed=3)


def _query_input(prompt: str) -> str:
    return prompt.rsplit("Input: ", 1)[1].removesuffix("\nOutput:")


def test_list_requests_exemplars_from_own_subtask_never_the_query(bb, plan):
    subs = {s.name: s for s in load_bigbench("list_functions", bb)}
    reqs = [r for r in plan.requests if r.part == "list_functions"]
    assert Counter(r.subtask for r in reqs) == {name: 64 for name in subs}  # 32 queries x 2 settings
    for r in reqs:
        sub, q, ex = subs[r.subtask], r.meta["row"], r.meta["exemplars"]
        assert len(ex) == len(set(ex)) == 4 and q not in ex
        assert r.target == sub.examples[q]["target"]
        assert _query_input(r.prompt) == sub.examples[q]["input"]
        assert all(sub.examples[i]["input"] != sub.examples[q]["input"] for i in ex)
        for i in ex:
            assert f"Input: {sub.examples[i]['input']}\nOutput: {sub.examples[i]['target']}\n\n" in r.prompt
        assert r.prompt.count("Input: ") == 5 and r.prompt.endswith("Output:")
        assert r.prompt.startswith(sub.task_prefix + "\n\n") == (r.setting == "natural+instr")
    by_query = defaultdict(set)
    for r in reqs:  # both settings of a query show the same exemplars
        by_query[(r.subtask, r.meta["row"])].add(tuple(r.meta["exemplars"]))
    assert all(len(v) == 1 for v in by_query.values())
    # a query's exemplars vary across queries (not one fixed set per subtask)
    assert len({next(iter(v)) for k, v in by_query.items() if k[0] == "c001"}) > 20


def test_simp_requests_program_length_filter(bb, plan):
    reqs = [r for r in plan.requests if r.part == "simp_turing_concept"]
    raw = _read(bb / "simp_turing_concept" / "witness_set" / "task.json")["examples"]
    short = [i for i, e in enumerate(raw) if len(parse_comment(e["comment"])[0]) <= 3]
    assert sorted(r.meta["row"] for r in reqs) == short and short
    for r in reqs:
        assert r.prompt == raw[r.meta["row"]]["input"] and r.target == raw[r.meta["row"]]["target"]
        assert r.category == f"length {len(r.subtask)}" and r.setting == "natural"
    everything = build_algorithmic_requests(bb, seed=3, parts=["simp_turing_concept"], max_program_length=None)
    assert len(everything.requests) == len(raw) > len(reqs)
    assert max(r.meta["program_length"] for r in everything.requests) == 5


def test_same_seed_same_prompts_and_limit_takes_prefix(bb, plan):
    again = build_algorithmic_requests(bb, seed=3)
    assert [(r.id, r.prompt, r.target) for r in again.requests] == [(r.id, r.prompt, r.target) for r in plan.requests]
    other = build_algorithmic_requests(bb, seed=4)
    assert {r.id: r.prompt for r in other.requests} != {r.id: r.prompt for r in plan.requests}

    full = {r.id: r.prompt for r in plan.requests}
    small = build_algorithmic_requests(bb, seed=3, limit=3)
    per = Counter((r.part, r.subtask if r.part != "simp_turing_concept" else "set", r.setting) for r in small.requests)
    assert set(per.values()) == {3}
    assert all(full[r.id] == r.prompt for r in small.requests)
    # the first 3 queries of each subtask are the first 3 of the unlimited order
    order = defaultdict(list)
    for r in plan.requests:
        if r.setting == "natural" and r.part == "list_functions":
            order[r.subtask].append(r.meta["row"])
    for r in small.requests:
        if r.setting == "natural" and r.part == "list_functions":
            assert r.meta["row"] in order[r.subtask][:3]


def test_filters_do_not_change_draws(bb, plan):
    full = {r.id: r.prompt for r in plan.requests}
    one = build_algorithmic_requests(bb, seed=3, subtasks=["c003", "+o", "swap"], settings=["natural"])
    assert {r.part for r in one.requests} == {"list_functions", "simp_turing_concept", "gen_list"}
    assert {r.subtask for r in one.requests} == {"c003", "+o", "swap-0"}
    assert all(full[r.id] == r.prompt for r in one.requests)
    assert "gen_concept" in one.skipped

    cat = build_algorithmic_requests(bb, seed=3, categories=["counting", "constant"])
    assert {r.category for r in cat.requests} == {"counting", "constant"}
    assert "list_functions" in cat.skipped and "simp_turing_concept" in cat.skipped  # the sample has none


def test_prompts_do_not_depend_on_hash_seed(bb):
    code = (
        "import hashlib,sys; from symtune.algorithmic import build_algorithmic_requests as b;"
        "p=b(sys.argv[1], seed=1, limit=2);"
        "print(hashlib.sha256(''.join(r.id+r.prompt+r.target for r in p.requests).encode()).hexdigest())"
    )
    outs = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(subprocess.run([sys.executable, "-c", code, str(bb)], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1


def test_bad_arguments(bb):
    with pytest.raises(ValueError, match="does not apply to algorithmic"):
        build_algorithmic_requests(bb, settings=["symbol"])
    with pytest.raises(ValueError, match="unknown algorithmic part"):
        build_algorithmic_requests(bb, parts=["list_function"])
    with pytest.raises(ValueError, match="unknown categor"):
        build_algorithmic_requests(bb, categories=["sorting"])
    with pytest.raises(ValueError, match="unknown list-function family"):
        build_algorithmic_requests(bb, families=["transmogrify"])
    with pytest.raises(ValueError, match="format"):
        build_algorithmic_requests(bb, fmt="nope")


def test_other_format(bb):
    plan = build_algorithmic_requests(bb, seed=0, limit=1, parts=LISTS, fmt="q_a", settings=["natural"])
    assert all(r.prompt.endswith("\nA:") and r.prompt.count("Q: ") == 5 for r in plan.requests)


# ---- scoring


@pytest.mark.parametrize(
    "gen, exact, parsed, malformed, cut",
    [
        (" [1, 2]", True, True, False, False),
        ("[1, 2]  ", True, True, False, False),
        (" [1, 2]\nInput: [3]", True, True, False, False),  # only the first line is the answer
        (" [1,2]", False, True, False, False),
        (" [1, 2] is the output", False, True, False, False),
        (" [2, 1]", False, False, False, False),
        (" [1, 2, 3", False, False, False, True),  # ran out of budget
        (" the output is a list", False, False, True, False),
        (" [1, x]", False, False, True, False),
        ("", False, False, True, False),
        ("\n[1, 2]", False, False, True, False),  # nothing on the answer line
    ],
)
def test_score_list_generation(gen, exact, parsed, malformed, cut):
    s = score_generation("list", gen, "[1, 2]")
    assert (s["exact"], s["parsed"], s["malformed"], s["cut"]) == (exact, parsed, malformed, cut)


def test_score_empty_list_and_bits():
    assert score_generation("list", " []", "[]")["exact"]
    assert score_generation("list", " [ ]", "[]")["parsed"]
    assert not score_generation("list", " [0]", "[]")["parsed"]
    assert score_generation("bits", " '01'", "'01'")["exact"]
    s = score_generation("bits", " '01' because", "'01'")
    assert not s["exact"] and s["parsed"]
    s = score_generation("bits", " 01", "'01'")
    assert not s["parsed"] and s["malformed"] and not s["cut"]
    s = score_generation("bits", " '0101", "'01'")
    assert not s["parsed"] and s["cut"] and not s["malformed"]
    assert score_generation("bits", " ''", "''")["exact"]
    assert not score_generation("bits", " '1'", "''")["parsed"]
    with pytest.raises(ValueError, match="not a well-formed"):
        score_generation("list", "[1]", "1")


def test_score_algorithmic_tables(bb):
    plan = build_algorithmic_requests(bb, seed=0, limit=2)
    reqs = plan.requests
    # right on every even request, a wrong list on odd ones, except malformed text on every 4th
    gens = [(" " + r.target) if i % 2 == 0 else (" nonsense" if i % 4 == 1 else (" [99999]" if r.kind == "list" else " '2'"))
            for i, r in enumerate(reqs)]  # fmt: skip
    samples, tables = score_algorithmic(reqs, gens, plan.skipped)
    assert len(samples) == len(reqs) and [s["id"] for s in samples] == [r.id for r in reqs]
    for part, by_setting in tables.parts.items():
        for setting, t in by_setting.items():
            mine = [(i, r) for i, r in enumerate(reqs) if r.part == part and r.setting == setting]
            assert t.overall.n == len(mine)
            assert t.overall.exact == sum(i % 2 == 0 for i, _ in mine)
            assert t.overall.malformed == sum(i % 2 == 1 and (i % 4 == 1 or r.kind == "bits") for i, r in mine)
            assert sum(c.n for c in t.categories.values()) == len(mine)
            assert sum(c.n for c in t.subtasks.values()) == len(mine)
            for cat, st in t.categories.items():
                want = [i for i, r in mine if r.category == cat]
                assert st.exact_acc == pytest.approx(sum(i % 2 == 0 for i in want) / len(want))
    assert set(tables.parts) == {"list_functions", "simp_turing_concept", "gen_list", "gen_concept"}
    text = format_algorithmic_tables(tables)
    for word in ("list_functions", "gen_list", "removing", "counting", "overall", "natural+instr", "malformed"):
        assert word in text
    assert "c001" not in text and "c001" in format_algorithmic_tables(tables, subtasks=True)
    with pytest.raises(ValueError, match="generations for"):
        score_algorithmic(reqs, gens[:-1])


class EchoTargets:
    """Answers every prompt with its target; records the calls."""

    identity = "echo-targets"

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, max_new_tokens, stop):
        self.calls.append((len(prompts), max_new_tokens, stop))
        return [" " + self.answers[p] + "\nInput:" for p in prompts]


def _evaluate_algorithmic(backend, data_dir, out, *, seed=0, limit=None, **opts):
    """The algorithmic suite as users run it: `symtune eval --suite algorithmic` (one runner for every query)."""
    from symtune.evaluate import EvalConfig, evaluate

    config = EvalConfig(suite="algorithmic", data_dir=str(data_dir), out=str(out), seed=seed, limit=limit, algorithmic=opts)
    results = evaluate(config, backend=backend, progress=False)
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return samples, results.algorithmic


def test_the_runner_answers_every_request_in_order_within_its_token_budget(bb, task_data, tmp_path):
    from symtune.runner import CHUNK

    plan = build_algorithmic_requests(task_data, seed=0, limit=2)
    backend = EchoTargets({r.prompt: r.target for r in plan.requests})
    samples, tables = _evaluate_algorithmic(backend, task_data, tmp_path / "e", limit=2)
    assert [s["id"] for s in samples] == [r.id for r in plan.requests] and all(s["exact"] for s in samples)
    assert all(n <= CHUNK and stop == ["\n"] for n, _, stop in backend.calls)
    budgets = token_budgets(plan.requests, backend.count_tokens)
    assert sorted({m for _, m, _ in backend.calls}) == sorted(set(budgets))  # one budget per call, each one used
    assert max(budgets) < max(r.max_new_tokens for r in plan.requests)
    # every target fits its generation budget (a character is at least one byte-level token)
    assert all(r.max_new_tokens >= len(r.target) + 1 for r in plan.requests)
    calls = len(backend.calls)  # a second run reads every answer from the cache
    _evaluate_algorithmic(backend, task_data, tmp_path / "e", limit=2)
    assert len(backend.calls) == calls


def test_token_budgets(bb):
    plan = build_algorithmic_requests(bb, seed=0, limit=2, parts=["list_functions", "gen_concept"])
    budgets = token_budgets(plan.requests, EchoTargets({}).count_tokens)
    subs = {s.name: s for s in load_bigbench("list_functions", bb)}
    for r, b in zip(plan.requests, budgets):
        if r.part == "list_functions":  # sized for the subtask's longest target, whatever --limit asks
            assert r.longest_target == max((e["target"] for e in subs[r.subtask].examples), key=len)
        assert b == min(r.max_new_tokens, len(r.longest_target.split()) + 2) and len(r.target) <= len(r.longest_target)


def test_evaluate_on_tiny_model(task_data, tiny_model, tmp_path):
    from symtune.scoring import HFBackend

    model, tok = tiny_model
    samples, tables = _evaluate_algorithmic(
        HFBackend(model, tok, batch_size=16), task_data, tmp_path / "e", limit=1, generated_per_family=1,
        families=["take", "reverse", "sum"], concept_families=["flip", "reverse"], settings=["natural"],
    )  # fmt: skip
    assert len(samples) == 5 + 1 + 3 + 2  # one query of each list subtask, the concept set, each family
    assert all(isinstance(s["generation"], str) and "\n" not in s["generation"] for s in samples)
    assert set(tables.parts) == {"list_functions", "simp_turing_concept", "gen_list", "gen_concept"}
    assert tables.config["seed"] == 0 and tables.config["families"] == ["take", "reverse", "sum"]
    assert "overall" in format_algorithmic_tables(tables)


@pytest.mark.slow
def test_default_model_answers_in_list_form(task_data, tmp_path):
    """SmolLM2-135M after 4 shots answers with a list most of the time (malformed answers stay rare)."""
    from symtune.scoring import hf_backend

    samples, tables = _evaluate_algorithmic(hf_backend("smollm2-135m"), task_data, tmp_path / "e", limit=4, parts=LISTS,
                                            settings=["natural"])
    overall = tables.parts["list_functions"]["natural"].overall
    assert overall.n == 20 and overall.malformed <= 4  # 5 subtasks x 4 queries
