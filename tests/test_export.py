import json

import pytest

from symtune.evaluate import EvalConfig
from symtune.export import export_lm_eval
from symtune.planning import plan_icl
from symtune.scoring import HFBackend


@pytest.mark.slow
def test_lm_eval_runs_an_exported_task_and_agrees(tiny_model, task_data, tmp_path):
    """lm-evaluation-harness loads the exported YAML + data and scores the same prompts: its per-candidate
    log-likelihoods and accuracy equal symtune's."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = tiny_model
    backend = HFBackend(model, tok, batch_size=4, identity={"model": "tiny"})
    config = EvalConfig(suite="icl", tasks=["raft_overruling"], settings=["natural"], data_dir=str(task_data), limit=6)
    items, _ = plan_icl(config, backend)
    names = export_lm_eval(items, tmp_path / "lm")
    assert names == ["symtune_raft_overruling_natural", "symtune_raft_overruling_natural_gen"]

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    out = lm_eval.simple_evaluate(model=lm, tasks=["symtune_raft_overruling_natural"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path / "lm")))
    harness = out["samples"]["symtune_raft_overruling_natural"]
    assert len(harness) == 6
    ours = backend.loglikelihoods([(it["prompt"], [" " + x for x in it["labels"]]) for it in items])
    by_prompt = {it["prompt"]: [s.logprob for s in sc] for it, sc in zip(items, ours)}
    for s in harness:
        theirs = [r[0][0] for r in s["resps"]]
        assert theirs == pytest.approx(by_prompt[s["doc"]["prompt"]], abs=1e-4)
    acc = sum(max(range(2), key=lambda k: by_prompt[it["prompt"]][k]) == it["labels"].index(it["gold"]) for it in items) / 6
    assert out["results"]["symtune_raft_overruling_natural"]["acc,none"] == pytest.approx(acc)
    data = [json.loads(x) for x in (tmp_path / "lm" / "data" / "symtune_raft_overruling_natural.jsonl").read_text().splitlines()]
    assert [d["prompt"] for d in data] == [it["prompt"] for it in items]
