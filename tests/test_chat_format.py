"""`--prompt-format chat`: the few-shot episode as a conversation in the model's own chat template (exemplars as
user/assistant turns, the label as the assistant's reply); `plain`, the default, stays the paper's prompts."""

import copy
import hashlib
import json
import re
from types import SimpleNamespace

import pytest
import torch

from symtune.evaluate import EvalConfig, evaluate
from symtune.formats import FormatError
from symtune.pipeline import stage_keys
from symtune.planning import TokenCounter, plan_icl
from symtune.runconfig import RunConfig
from symtune.runner import cache_key_of
from symtune.scoring import HFBackend

TASKS = ["mpqa", "tweet_eval_emotion"]


def _config(task_data, **kw):
    return EvalConfig(**{"out": "unused", "data_dir": str(task_data), "suite": "icl", "tasks": TASKS, "limit": 3,
                         "k": 2, **kw})


@pytest.fixture(scope="module")
def backend(tiny_model):
    model, tok = tiny_model
    return HFBackend(model, tok, batch_size=8, identity={"backend": "hf", "model": "tiny-random-llama"})


def test_chat_prompt_is_the_episode_as_alternating_turns(smollm2_tokenizer, task_data):
    items, _ = plan_icl(_config(task_data, prompt_format="chat", settings=["natural+instr", "symbol"]),
                        TokenCounter(smollm2_tokenizer))
    assert {it["setting"] for it in items} == {"natural+instr", "symbol"}
    for it in items:
        p = it["prompt"]
        roles = re.findall(r"<\|im_start\|>(\w+)\n", p)
        # the template's own system turn, then user/assistant per exemplar, the query's user turn, the reply opened
        assert roles == ["system"] + ["user", "assistant"] * (it["n_exemplars"] + 1)
        assert p.endswith("<|im_end|>\n<|im_start|>assistant\n")
        replies = re.findall(r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>", p)
        assert len(replies) == it["n_exemplars"] and set(replies) <= set(it["labels"])
        user = re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", p, re.S)
        assert all(u.startswith("Input: ") or it["setting"] == "natural+instr" for u in user)
        assert user[-1].startswith("Input: ") and user[-1].endswith("\nOutput:")
        # the label is the assistant's reply: no leading space; greedy answers also stop at the end of turn
        assert it["candidates"] == it["labels"] and it["gold"] in it["labels"]
        assert it["stop"] == ["\n", "<|im_end|>"]
    instr = next(it for it in items if it["setting"] == "natural+instr" and it["task"] == "mpqa")
    first_user = re.search(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", instr["prompt"], re.S).group(1)
    assert first_user.startswith("Is the opinion expressed in this phrase negative or positive?\n\nInput: ")


def test_plain_prompts_and_cache_keys_are_unchanged(smollm2_tokenizer, task_data):
    """Digests of the prompts and of their cache keys as they were before `--prompt-format` existed."""
    items, _ = plan_icl(_config(task_data, k=2), TokenCounter(smollm2_tokenizer))
    assert len(items) == 27 and all(it["candidates"] == [" " + x for x in it["labels"]] for it in items)
    prompts = hashlib.sha256(json.dumps([it["prompt"] for it in items]).encode()).hexdigest()[:16]
    pinned = SimpleNamespace(identity={"model": "pinned"})
    keys = "".join(cache_key_of(pinned, kind, it, 8) for it in items for kind in ("rank", "gen"))
    assert (prompts, hashlib.sha256(keys.encode()).hexdigest()[:16]) == ("f04d99e62118eeb5", "4ff7ce6a83fddd4b")
    assert items[0]["prompt"].endswith("\nOutput:") and "<|im_start|>" not in items[0]["prompt"]


def test_chat_evaluation_scores_what_a_full_forward_scores(backend, tiny_model, task_data, tmp_path):
    model, tok = tiny_model
    config = _config(task_data, out=str(tmp_path), prompt_format="chat", settings=["natural", "symbol"],
                     max_new_tokens=3)
    res = evaluate(config, backend=backend, progress=False)
    assert res.complete and json.loads((tmp_path / "results.json").read_text())["config"]["prompt_format"] == "chat"
    items = {it["id"]: it for it in plan_icl(config, backend)[0]}
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(items) == 12
    with torch.inference_mode():
        for s in samples:
            it = items[s["id"]]
            assert s["prompt_sha256"] == hashlib.sha256(it["prompt"].encode()).hexdigest()
            prompt = tok(it["prompt"]).input_ids
            for cand, lp in zip(it["candidates"], s["logprobs"]):
                ids = tok(it["prompt"] + cand).input_ids
                assert ids[:len(prompt)] == prompt
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                ref = sum(logp[i - 1, ids[i]].item() for i in range(len(prompt), len(ids)))
                assert lp == pytest.approx(ref, abs=1e-4)
    # the prompt text keys the cache: the plain prompts of the same queries are not served from the chat results
    before = backend.stats["requests"]
    plain = evaluate(_config(task_data, out=str(tmp_path), settings=["natural", "symbol"], max_new_tokens=3),
                     backend=backend, progress=False)
    assert backend.stats["requests"] - before == 12 and plain.config["prompt_format"] == "plain"


def test_generation_stops_at_the_end_of_turn_token(tiny_model):
    """A model whose every next token is <|endoftext|> (a special token, not the tokenizer's EOS): with it as a
    stop string the answer ends there, instead of decoding on to max_new_tokens."""
    model, tok = tiny_model
    silent = copy.deepcopy(model)
    torch.nn.init.zeros_(silent.model.norm.weight)  # all logits 0: the greedy token is id 0, <|endoftext|>
    assert tok.convert_ids_to_tokens(0) == "<|endoftext|>" and tok.eos_token_id != 0
    new_tokens = []  # what the naive path's model.generate produced: the decoded answer is "" either way
    generate = silent.generate

    def spy(*args, **kw):
        out = generate(*args, **kw)
        new_tokens.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    silent.generate = spy
    for stop, decoded, produced in ((["\n"], 1, 4), (["\n", "<|endoftext|>"], 0, 1)):
        be = HFBackend(silent, tok, identity={"model": "silent"})
        _, gens = be.score_and_generate([("Input: a\nOutput:", ["yes"])], 4, stop)
        assert gens == [""] and be.stats["decoded_prompts"] == decoded
        naive = HFBackend(silent, tok, identity={"model": "silent"}, naive=True)
        assert naive.generate(["Input: a\nOutput:"], 4, stop) == [""]
        assert new_tokens[-1] == produced  # with the end of turn as a stop, generation ends on it


def test_a_tokenizer_without_a_chat_template_is_a_clear_error(smollm2_tokenizer, task_data):
    bare = copy.deepcopy(smollm2_tokenizer)
    bare.chat_template = None
    with pytest.raises(FormatError, match=r"model 'my-base-model' has no chat template.*--prompt-format plain"):
        plan_icl(_config(task_data, model="my-base-model", prompt_format="chat"), TokenCounter(bare))


def test_prompt_format_enters_the_stage_key_only_when_chat(task_data, tmp_path):
    def keys(**ev):
        return stage_keys(RunConfig(out=str(tmp_path), data_dir=str(task_data), eval={"suite": "icl", **ev}))

    assert keys() == keys(prompt_format="plain")
    assert keys()["eval_base"] != keys(prompt_format="chat")["eval_base"]
