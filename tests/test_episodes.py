import subprocess
import sys
from collections import Counter

import pytest

from symtune.episodes import (
    BudgetError,
    EpisodeError,
    PieceMeasure,
    draw_episode,
    draw_shared_episodes,
    exact_measure,
    fit_budget,
    prepare_task,
    query_order,
    render,
)
from symtune.symbols import SymbolPool
from symtune.tasks import TaskError, load_catalogue, spec_from_dict


@pytest.fixture(scope="module")
def catalogue(task_data):
    return load_catalogue(task_data)


@pytest.fixture(scope="module")
def stance(catalogue, task_data):
    return prepare_task(catalogue["tweet_eval_stance_hillary"], task_data)


@pytest.fixture(scope="module")
def raft(catalogue, task_data):
    return prepare_task(catalogue["raft_overruling"], task_data)


def test_eval_queries_from_test_exemplars_from_train(stance):
    assert (stance.query_split, stance.exemplar_split) == ("test", "train")


@pytest.mark.parametrize("k", [1, 4, 7])
def test_exemplars_class_balanced_and_shuffled(stance, k):
    orders = set()
    for q in query_order(stance, 0, 20):
        ep = draw_episode(stance, q, seed=0, k=k)
        assert set(ep.counts(stance).values()) == {k}
        orders.add(tuple(stance.exemplars[i]["label"] for i in ep.exemplars))
    assert len(orders) >= 6  # the class order varies: exemplars are shuffled


def test_query_never_among_exemplars_when_same_split(raft):
    assert raft.same_split
    for q in range(len(raft.queries)):
        ep = draw_episode(raft, q, seed=3, k=4)
        assert q not in ep.exemplars
        assert raft.query_inputs[q] not in [raft.exemplar_inputs[i] for i in ep.exemplars]


def test_draws_independent_of_limit_and_order(stance):
    full = query_order(stance, 0)
    assert query_order(stance, 0, 10) == full[:10]
    forward = [render(stance, draw_episode(stance, q, seed=1, setting="symbol", pool=SymbolPool("heldout"))) for q in full[:10]]
    backward = [render(stance, draw_episode(stance, q, seed=1, setting="symbol", pool=SymbolPool("heldout"))) for q in reversed(full[:10])]
    assert forward == backward[::-1]
    assert forward != [render(stance, draw_episode(stance, q, seed=2)) for q in full[:10]]


def test_draws_independent_of_pythonhashseed(task_data):
    code = (
        "import hashlib,sys;from symtune.tasks import load_catalogue;from symtune.episodes import *;"
        "from symtune.symbols import SymbolPool;"
        f"t=prepare_task(load_catalogue({str(task_data)!r})['rte'],{str(task_data)!r},purpose='tune');"
        "h=hashlib.sha256();"
        "[h.update(render(t,draw_episode(t,q,seed=0,setting='symbol',k=(2,10),pool=SymbolPool(),fmt='random'))[0].encode()) for q in query_order(t,0,50)];"
        "print(h.hexdigest())"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": s, "PATH": ""}, capture_output=True, text=True, check=True).stdout
        for s in ("1", "2")
    }
    assert len(outs) == 1


def test_settings_share_exemplars_and_differ_in_labels_and_instruction(stance):
    q = query_order(stance, 0, 1)[0]
    eps = {s: draw_episode(stance, q, seed=0, setting=s, pool=SymbolPool("heldout")) for s in ("natural+instr", "natural", "symbol+instr", "symbol")}
    assert len({ep.exemplars for ep in eps.values()}) == 1
    assert eps["natural+instr"].instruction == stance.spec.instruction and eps["natural"].instruction is None
    assert eps["natural"].mapping == {x: x for x in stance.spec.labels}
    held = SymbolPool("heldout").all()
    assert set(eps["symbol"].mapping.values()) <= held and len(set(eps["symbol"].mapping.values())) == 3
    prompt, completion = render(stance, eps["symbol+instr"])
    assert prompt.startswith(stance.spec.instruction) and completion.strip() in eps["symbol+instr"].mapping.values()


def test_flipped_labels_swap_exemplars_and_query(raft):
    ep = draw_episode(raft, 0, seed=0, setting="flipped")
    a, b = raft.spec.labels
    assert ep.mapping == {a: b, b: a}
    prompt, completion = render(raft, ep)
    gold = raft.queries[0]["label"]
    assert completion == " " + (b if gold == a else a)
    for i in ep.exemplars:  # every exemplar is shown with the other label
        x, label = raft.exemplar_inputs[i], raft.exemplars[i]["label"]
        assert f"Input: {x}\nOutput: {ep.mapping[label]}" in prompt


def test_flipped_needs_binary(stance):
    with pytest.raises(EpisodeError, match="binary"):
        draw_episode(stance, 0, seed=0, setting="flipped")


def test_tuning_k_range_and_formats(catalogue, task_data):
    task = prepare_task(catalogue["sst2"], task_data, purpose="tune")
    ks, fmts = Counter(), Counter()
    for q in query_order(task, 0, 300):
        ep = draw_episode(task, q, seed=0, setting="symbol", k=(2, 10), pool=SymbolPool(), fmt="random")
        ks.update(set(ep.counts(task).values()))
        fmts[ep.format] += 1
    assert set(ks) == set(range(2, 11)) and len(fmts) == 10


def test_budget_drops_evenly_and_never_cuts_the_query(stance, smollm2_tokenizer):
    count = lambda s: len(smollm2_tokenizer(s)["input_ids"])  # noqa: E731
    measure = exact_measure(stance, count)
    q = query_order(stance, 0, 1)[0]
    ep = draw_episode(stance, q, seed=0, k=6)
    full = measure(ep)
    fitted = fit_budget(stance, ep, measure, full - 40)
    counts = fitted.counts(stance)
    assert measure(fitted) <= full - 40 and max(counts.values()) - min(counts.values()) <= 1
    assert render(stance, fitted)[0].endswith("Input: " + stance.query_inputs[q] + "\nOutput:")
    with pytest.raises(BudgetError, match="one exemplar per class exceeds the budget of 20"):
        fit_budget(stance, ep, measure, 20)


def test_piece_measure_tracks_exact_length(catalogue, task_data, smollm2_tokenizer):
    task = prepare_task(catalogue["mnli"], task_data, purpose="tune")
    measure = PieceMeasure(smollm2_tokenizer, task)
    exact = exact_measure(task, lambda s: len(smollm2_tokenizer(s, add_special_tokens=False)["input_ids"]))
    for q in query_order(task, 0, 30):
        ep = draw_episode(task, q, seed=0, setting="symbol", k=(2, 10), pool=SymbolPool(), fmt="random")
        assert abs(measure(ep) - exact(ep)) <= 2 + len(ep.exemplars)


def test_one_class_task_is_reported(tmp_path):
    d = tmp_path / "one"
    d.mkdir()
    (d / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    spec = spec_from_dict({"name": "one", "role": "extra", "labels": ["x", "y"], "input_fields": ["text"], "local": str(d)}, "one.yaml")
    with pytest.raises(TaskError, match="only one class"):
        prepare_task(spec)


def test_shared_exemplars_one_draw_for_every_query(raft):
    """--exemplars shared: one exemplar set per (seed, trial, task) for all queries and settings; the queries
    are neither exemplar rows nor share an exemplar's input; a smaller limit asks a prefix of the same queries."""
    pool = SymbolPool("heldout")
    few = draw_shared_episodes(raft, 5, seed=0, setting="symbol", pool=pool, max_queries=30)
    many = draw_shared_episodes(raft, 30, seed=0, setting="symbol", pool=pool, max_queries=30)
    assert len(many) == 30 and len({ep.exemplars for ep in many}) == 1
    assert few == many[:5]  # same exemplars, same symbols, same queries
    shown = {raft.exemplar_inputs[i] for i in many[0].exemplars}
    assert not shown & {raft.query_inputs[ep.query] for ep in many}
    if raft.same_split:
        assert not {ep.query for ep in many} & set(many[0].exemplars)
    natural = draw_shared_episodes(raft, 30, seed=0, setting="natural", max_queries=30)
    assert natural[0].exemplars == many[0].exemplars  # settings differ only in labels
    other = draw_shared_episodes(raft, 30, seed=0, setting="symbol", pool=pool, max_queries=30, trial=1)
    assert other[0].exemplars != many[0].exemplars
    counts = Counter(raft.exemplars[i]["label"] for i in many[0].exemplars)
    assert set(counts.values()) == {4}  # k per class
