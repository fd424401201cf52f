import pytest

from symtune.eta import RunEta


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _eta(clock, tune_units=300.0, eval_units=100.0, caps=None):
    sizes = {"mixture": ("other", None), "tune": ("tune", tune_units), "eval_base": ("eval", eval_units),
             "eval_tuned": ("eval", eval_units), "report": ("other", None)}  # fmt: skip
    return RunEta(sizes, caps, clock=clock)


def test_no_estimate_before_anything_is_timed():
    clock = Clock()
    eta = _eta(clock)
    eta.start("mixture")
    clock.t = 5
    eta.finish("mixture")
    assert eta.remaining()[0] is None
    assert "estimated once a stage has been timed" in eta.line()


def test_tuning_pace_projects_the_evaluations_then_measurement_replaces_it():
    clock = Clock()
    eta = _eta(clock)
    eta.start("tune")
    eta.progress("tune", 0.0)
    clock.t = 10
    eta.progress("tune", 0.25)  # 10 s for a quarter: 30 s left; 40 s for 300 units -> 40/3 s per 100-unit eval
    left, projected = eta.remaining()
    assert projected and left == pytest.approx(30 + 2 * 40 / 3)
    clock.t = 40
    eta.finish("tune")
    eta.start("eval_base")
    eta.progress("eval_base", 0.0)
    clock.t = 60
    eta.progress("eval_base", 0.5)  # the evaluation's own pace: 20 s left, and 40 s for the tuned one
    assert eta.remaining() == (pytest.approx(60.0), False)
    assert eta.line() == "run: 1.0 min so far, 1.0 min left"
    clock.t = 80
    eta.finish("eval_base")
    assert eta.remaining() == (pytest.approx(40.0), False)


def test_resumed_work_does_not_count_as_speed():
    clock = Clock()
    eta = _eta(clock)
    eta.start("eval_base")
    eta.progress("eval_base", 0.8)  # 80% came from the cache of an interrupted run
    clock.t = 10
    eta.progress("eval_base", 0.9)  # 10 s per 10%
    # 10 s left; 20 s for 20 units is 1 s per unit: 100 s for the tuned evaluation, ~300 s for tuning
    assert eta.remaining() == (pytest.approx(10 + 100 + 300), True)


def test_tuning_estimate_is_capped_by_its_time_limit():
    clock = Clock()
    eta = _eta(clock, tune_units=3000.0, caps={"tune": 50.0})
    eta.start("eval_base")
    eta.progress("eval_base", 0.0)
    clock.t = 10
    eta.finish("eval_base")  # 0.1 s per unit: tuning would take 300 s, but stops at 50
    left, projected = eta.remaining()
    assert projected and left == pytest.approx(50 + 10)


def test_stages_done_earlier_time_the_rest():
    clock = Clock()
    eta = _eta(clock)
    eta.finish("tune", 120.0)
    eta.finish("eval_base", 30.0)
    assert eta.remaining() == (pytest.approx(30.0), False)


def test_evaluation_size_counts_a_shared_prefix_once(task_data, smollm2_tokenizer):
    """With shared exemplars most of every prompt is the same prefix, which the engine forwards once: the run's
    estimate must not count it per query (it once said 88 minutes for a 5-minute evaluation)."""
    from symtune.evaluate import EvalConfig
    from symtune.planning import TokenCounter, plan_evaluation, plan_tokens

    counter = TokenCounter(smollm2_tokenizer)
    kw = {"data_dir": str(task_data), "suite": "icl", "tasks": ["subj"], "settings": ["symbol"], "limit": 6}
    shared, per_query = EvalConfig(exemplars="shared", **kw), EvalConfig(**kw)
    prompts = [it["prompt"] for it in plan_evaluation(shared, counter)[0]]
    ids = [counter.token_ids(p) for p in prompts]
    assert len(prompts) >= 3
    size = plan_tokens(shared, counter)
    # the trie of the prompts: every token once per distinct prefix, so at most the sum and much less here
    distinct = len({tuple(x[: n + 1]) for x in ids for n in range(len(x))})
    assert size == distinct < 0.5 * sum(map(len, ids))
    per_query_ids = [counter.token_ids(it["prompt"]) for it in plan_evaluation(per_query, counter)[0]]
    assert plan_tokens(per_query, counter) == len({tuple(x[: n + 1]) for x in per_query_ids for n in range(len(x))})
