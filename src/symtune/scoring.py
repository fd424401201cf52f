"""Scoring: backends that give candidate log-likelihoods and greedy generations, and the two rules.

Rank classification picks the label whose text, as it appears after the prompt, has the highest
log-probability (`acc`: summed; `acc_norm_tokens` / `acc_norm_chars`: divided by its token / char
count). Generation match compares a greedy answer, lightly normalised, with the label set.

`HFBackend` is the fast exact path for `transformers` models: one forward over each prompt
(length-sorted batches), all of its candidates scored from the prompt's key/value cache in one
batch, the LM head applied only to the rows whose log-probabilities are needed. `naive=True` runs a
full forward per (prompt + candidate) instead: the reference the fast path is tested against.
`OpenAICompletionsBackend` scores through `/v1/completions` with `echo` (vLLM, llama.cpp, TGI).
"""

from __future__ import annotations

import inspect
import logging
import string
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

Request = tuple[str, list[str]]  # (prompt, candidate continuations, each as it follows the prompt)


class BackendError(RuntimeError):
    """A backend could not produce the scores asked for; the message says why and what to do."""


class PromptTooLongError(ValueError):
    """A prompt plus candidate does not fit the model's context; drop exemplars before scoring."""


@dataclass(frozen=True)
class CandidateScore:
    logprob: float  # sum of the candidate's token log-probabilities given the prompt (nats)
    n_tokens: int
    n_chars: int
    is_greedy: bool  # every candidate token is the argmax continuation


@runtime_checkable
class Backend(Protocol):
    identity: dict
    max_length: int

    def loglikelihoods(self, requests: list[Request]) -> list[list[CandidateScore]]: ...

    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...


# ---- scoring rules ----------------------------------------------------------------------------

RANK_RULES = {
    "acc": lambda s: s.logprob,
    "acc_norm_tokens": lambda s: s.logprob / max(s.n_tokens, 1),
    "acc_norm_chars": lambda s: s.logprob / max(s.n_chars, 1),
}


def rank_classify(scores: list[CandidateScore], labels: list[str], rule: str = "acc") -> str:
    """The label with the highest score under `rule` (first one on ties)."""
    if len(scores) != len(labels) or not labels:
        raise ValueError(f"need one score per label, got {len(scores)} scores for {len(labels)} labels")
    if rule not in RANK_RULES:
        raise ValueError(f"unknown rank rule {rule!r}; use one of {', '.join(RANK_RULES)}")
    key = RANK_RULES[rule]
    best = max(range(len(labels)), key=lambda i: (key(scores[i]), -i))
    return labels[best]


def rank_predictions(scores: list[CandidateScore], labels: list[str]) -> dict[str, str]:
    """Predictions under every rank rule: {'acc': ..., 'acc_norm_tokens': ..., 'acc_norm_chars': ...}."""
    return {rule: rank_classify(scores, labels, rule) for rule in RANK_RULES}


_TRAILING = string.punctuation + string.whitespace


def normalize_answer(text: str) -> str:
    """strip, cut at the first newline, lower-case, strip trailing punctuation."""
    text = text.strip().split("\n", 1)[0]
    return text.strip().lower().rstrip(_TRAILING)


def generation_match(text: str, labels: list[str]) -> tuple[str | None, bool]:
    """(the label the generated text names, or None; whether it is in the label set)."""
    normal = {}
    for label in labels:
        n = normalize_answer(label)
        if n in normal and normal[n] != label:
            raise ValueError(f"labels {normal[n]!r} and {label!r} are the same after normalisation")
        normal[n] = label
    pred = normal.get(normalize_answer(text))
    return pred, pred is not None


# ---- transformers backend ---------------------------------------------------------------------


@dataclass
class _Plan:
    """How one request is scored: cached candidates share the prompt ids; the rest are exact joints."""

    prompt_ids: list[int]
    cached: list[tuple[int, list[int]]]  # (candidate index, candidate ids after the prompt)
    joint: list[tuple[int, list[int], int]]  # (candidate index, joint ids, first candidate position)


class HFBackend:
    """Exact candidate scoring and greedy generation for a `transformers` causal LM."""

    def __init__(self, model, tokenizer, batch_size: int = 8, identity: dict | None = None, *,
                 naive: bool = False, max_batch_tokens: int = 8192, max_pad_frac: float = 0.2,
                 add_bos: bool | None = None):
        import torch

        self.torch = torch
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_batch_tokens, self.naive = batch_size, max_batch_tokens, naive
        self.max_pad_frac = max_pad_frac
        self.identity = identity or {"backend": "hf", "model": getattr(model, "name_or_path", type(model).__name__),
                                     "dtype": str(model.dtype).removeprefix("torch.")}
        cfg = model.config
        n_ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        tml = getattr(tokenizer, "model_max_length", None)
        self.max_length = int(min(x for x in (n_ctx, tml if tml and tml < 10**7 else None, 10**9) if x))
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self._prefix = self._bos_prefix() if add_bos is None else ([tokenizer.bos_token_id] if add_bos else [])
        self.stats = {"prefix_fallbacks": 0, "requests": 0, "candidates": 0, "forward_tokens": 0,
                      "padded_tokens": 0, "lm_head_rows": 0}
        self._sliceable_cache = True
        # transformers 5.x calls the cache argument `cache`, 4.x `past_key_values`
        self._cache_kw = "cache" if "cache" in inspect.signature(self._decoder().forward).parameters else "past_key_values"
        if not naive:
            self._check_fast_path()

    # -- tokenisation
    def _bos_prefix(self) -> list[int]:
        """The special tokens the tokenizer puts before text (usually BOS), never the ones after."""
        with_sp = self.tokenizer("a b").input_ids
        plain = self.tokenizer("a b", add_special_tokens=False).input_ids
        for i in range(len(with_sp) - len(plain) + 1):
            if with_sp[i:i + len(plain)] == plain:
                return list(with_sp[:i])
        return []

    def encode(self, text: str) -> list[int]:
        return self._prefix + self.tokenizer(text, add_special_tokens=False).input_ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def _empty_prompt_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else self.pad_id

    def _plan(self, prompt: str, candidates: list[str]) -> _Plan:
        if not candidates:
            raise ValueError(f"request has no candidates (prompt starts {prompt[:60]!r})")
        enc = self.tokenizer([prompt] + [prompt + c for c in candidates], add_special_tokens=False).input_ids
        p = self._prefix + enc[0]
        start = [] if p else [self._empty_prompt_id()]
        p = start + p  # an empty prompt is conditioned on EOS, as lm-eval does
        plan = _Plan(p, [], [])
        for k, (cand, ids) in enumerate(zip(candidates, enc[1:])):
            if not cand:
                raise ValueError(f"empty candidate #{k} for prompt starting {prompt[:60]!r}")
            joint = start + self._prefix + ids
            if len(joint) > self.max_length:
                raise PromptTooLongError(f"prompt + candidate {cand!r} is {len(joint)} tokens, more than the "
                                         f"model's context of {self.max_length}; drop exemplars before scoring")
            if joint[:len(p)] == p and len(joint) > len(p):
                plan.cached.append((k, joint[len(p):]))
            else:
                # the candidate's first token swallows the end of the prompt (or re-splits it): score the
                # exact joint tokenisation from the first token that differs
                b = next((i for i, (x, y) in enumerate(zip(joint, p)) if x != y), min(len(p), len(joint) - 1))
                b = max(b, 1)
                plan.joint.append((k, joint, b))
                self.stats["prefix_fallbacks"] += 1
        return plan

    # -- model pieces
    def _t(self, data):
        """An integer tensor on the model's device."""
        return self.torch.tensor(list(data) if isinstance(data, range) else data, dtype=self.torch.long,
                                 device=self.device)

    def _decoder(self):
        return self.model.get_decoder()

    def _head(self, hidden):
        """Logits (float32) for the given final hidden rows, with the model's logit post-processing."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = self.torch.tanh(logits / cap) * cap
        if getattr(cfg, "logit_scale", None) and cfg.model_type.startswith("cohere"):
            logits = logits * cfg.logit_scale
        if getattr(cfg, "logits_scaling", None):
            logits = logits / cfg.logits_scaling
        return logits

    @property
    def _vocab(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    def _check_fast_path(self) -> None:
        """The fast path reimplements the model's head; check it matches model(...) once, else go naive."""
        torch = self.torch
        ids = self._t([self.encode("Input: a quick check of the fast path\nOutput:")])
        try:
            with torch.inference_mode():
                ref = self.model(input_ids=ids).logits.float()
                out = self._decoder()(input_ids=ids, use_cache=True)
                mine = self._head(out.last_hidden_state)
            from transformers.cache_utils import DynamicLayer

            self._sliceable_cache = all(type(layer) is DynamicLayer for layer in _cache_of(out).layers)
        except (AttributeError, TypeError, NotImplementedError) as e:
            log.warning("fast scoring path unavailable for %s (%s); using the naive path", type(self.model).__name__, e)
            self.naive = True
            return
        err = (ref - mine).abs().max().item()
        if err > 1e-3 * max(1.0, ref.abs().max().item()):
            log.warning("fast path head differs from model(...) by %.3g; using the naive path", err)
            self.naive = True

    # -- scoring
    def loglikelihoods(self, requests: list[Request]) -> list[list[CandidateScore]]:
        plans = [self._plan(prompt, list(cands)) for prompt, cands in requests]
        self.stats["requests"] += len(requests)
        self.stats["candidates"] += sum(len(c) for _, c in requests)
        out: list[list[CandidateScore | None]] = [[None] * len(c) for _, c in requests]
        with self.torch.inference_mode():
            if self.naive:
                for r, pl in enumerate(plans):
                    for k, cids in pl.cached:
                        out[r][k] = self._naive_one(pl.prompt_ids + cids, len(pl.prompt_ids))
                    for k, joint, b in pl.joint:
                        out[r][k] = self._naive_one(joint, b)
            else:
                self._fast(plans, out)
                self._joint_rows([(r, k, joint, b) for r, pl in enumerate(plans) for k, joint, b in pl.joint], out)
        return [[self._with_chars(s, c) for s, c in zip(row, cands)] for row, (_, cands) in zip(out, requests)]

    @staticmethod
    def _with_chars(s: CandidateScore, cand: str) -> CandidateScore:
        return CandidateScore(s.logprob, s.n_tokens, len(cand), s.is_greedy)

    def _score_rows(self, hidden_rows, targets: list[list[int]]) -> list[CandidateScore]:
        """hidden_rows: (sum of target lengths, H), in target order."""
        torch = self.torch
        self.stats["lm_head_rows"] += hidden_rows.shape[0]
        logp = torch.log_softmax(self._head(hidden_rows), dim=-1)
        flat = self._t([t for ts in targets for t in ts])
        tok_lp = logp.gather(1, flat[:, None])[:, 0]
        greedy = logp.argmax(-1) == flat
        res, i = [], 0
        for ts in targets:
            n = len(ts)
            res.append(CandidateScore(tok_lp[i:i + n].sum().item(), n, 0, bool(greedy[i:i + n].all())))
            i += n
        return res

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices sorted by length (longest first), cut into batches of at most `batch_size` sequences and
        `max_batch_tokens` padded tokens, a batch closing early rather than exceed `max_pad_frac` padding."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches, cur, real = [], [], 0
        bs = self.batch_size if self._sliceable_cache else 1
        for i in order:
            if cur:
                padded = lengths[cur[0]] * (len(cur) + 1)
                if (len(cur) >= bs or padded > self.max_batch_tokens
                        or padded - real - lengths[i] > self.max_pad_frac * padded):
                    batches.append(cur)
                    cur, real = [], 0
            cur.append(i)
            real += lengths[i]
        return batches + ([cur] if cur else [])

    def _pad(self, seqs: list[list[int]]):
        n = max(len(s) for s in seqs)
        self.stats["forward_tokens"] += n * len(seqs)
        self.stats["padded_tokens"] += sum(n - len(s) for s in seqs)
        # right padding: causal attention keeps real tokens blind to the pads after them, so no mask needed
        return self._t([s + [self.pad_id] * (n - len(s)) for s in seqs])

    def _fast(self, plans: list[_Plan], out, on_prompt=None) -> None:
        """One forward per batch of prompts, then one forward for all their multi-token candidates together
        on the prompts' key/value cache; the LM head once per batch, on the rows that are scored.
        `on_prompt(r, last_hidden, cache, b, prompt_len)` sees each prompt's cache before the candidates."""
        torch = self.torch
        todo = [r for r, pl in enumerate(plans) if pl.cached]
        dec = self._decoder()
        for batch in self._batches([len(plans[r].prompt_ids) for r in todo]):
            rows = [todo[i] for i in batch]
            lens = [len(plans[r].prompt_ids) for r in rows]
            # (batch row, candidate ids) of every candidate that needs positions past the prompt
            multi = [(b, c) for b, r in enumerate(rows) for _, c in plans[r].cached if len(c) > 1]
            res = dec(input_ids=self._pad([plans[r].prompt_ids for r in rows]),
                      use_cache=on_prompt is not None or bool(multi))
            hidden, cache = res.last_hidden_state, _cache_of(res)
            last = hidden[self._t(range(len(rows))), self._t(lens) - 1]
            if on_prompt is not None:
                for b, r in enumerate(rows):
                    on_prompt(r, last[b], cache, b, lens[b])
            ext_h = self._extend(cache, lens, multi) if multi else None
            parts, targets, mi = [], [], 0
            for b, r in enumerate(rows):
                for _, cids in plans[r].cached:
                    parts.append(last[b:b + 1])
                    if len(cids) > 1:
                        parts.append(ext_h[mi, :len(cids) - 1])
                        mi += 1
                    targets.append(cids)
            scores = iter(self._score_rows(torch.cat(parts), targets))
            for r in rows:
                for k, _ in plans[r].cached:
                    out[r][k] = next(scores)

    def _extend(self, cache, lens: list[int], multi: list[tuple[int, list[int]]]):
        """Hidden states of every multi-token candidate (all but its last token), each continuing its own
        prompt from the batch's key/value cache, in one forward. Returns (len(multi), longest - 1, H)."""
        from transformers.cache_utils import DynamicCache

        torch = self.torch
        inp = self._pad([c[:-1] for _, c in multi])
        if not self._sliceable_cache:  # a batch of one prompt here: extend the model's own cache object
            cache.batch_repeat_interleave(len(multi))
            return self._decoder()(input_ids=inp, use_cache=True, **{self._cache_kw: cache}).last_hidden_state
        idx = self._t([b for b, _ in multi])
        c = DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, idx), layer.values.index_select(0, idx))
                                         for layer in cache.layers])
        n_cache, n_new = c.get_seq_length(), inp.shape[1]
        plen = self._t([lens[b] for b, _ in multi])
        # a prompt shorter than the batch's longest has pad keys in the cache: mask them out, and place
        # its candidate tokens right after its own last position
        mask = torch.cat([self._t(range(n_cache))[None] < plen[:, None],
                          torch.ones(len(multi), n_new, dtype=torch.bool, device=plen.device)], 1)
        pos = plen[:, None] + self._t(range(n_new))[None]
        return self._decoder()(input_ids=inp, attention_mask=mask.long(), position_ids=pos, use_cache=True,
                               **{self._cache_kw: c}).last_hidden_state

    def _joint_rows(self, items: list[tuple[int, int, list[int], int]], out) -> None:
        """Candidates whose prompt tokens are not a prefix of the joint: full forward of the joint ids."""
        torch = self.torch
        dec = self._decoder()
        for batch in self._batches([len(j) for _, _, j, _ in items]):
            sel = [items[i] for i in batch]
            hidden = dec(input_ids=self._pad([j[:-1] for _, _, j, _ in sel]), use_cache=False).last_hidden_state
            parts = [hidden[i, b - 1:len(j) - 1] for i, (_, _, j, b) in enumerate(sel)]
            scores = self._score_rows(torch.cat(parts), [j[b:] for _, _, j, b in sel])
            for (r, k, _, _), s in zip(sel, scores):
                out[r][k] = s

    def _naive_one(self, ids: list[int], start: int) -> CandidateScore:
        """Reference: the model's own forward over the whole sequence, full logits, no cache."""
        torch = self.torch
        self.stats["forward_tokens"] += len(ids)
        logits = self.model(input_ids=self._t([ids])).logits[0].float()
        logp = torch.log_softmax(logits[start - 1:len(ids) - 1], dim=-1)
        tgt = self._t(ids[start:])
        lp = logp.gather(1, tgt[:, None])[:, 0].sum().item()
        return CandidateScore(lp, len(tgt), 0, bool((logp.argmax(-1) == tgt).all()))

    # -- generation
    def generate(self, prompts: list[str], max_new_tokens: int = 16, stop: list[str] | None = None) -> list[str]:
        """Greedy continuations, cut at the first stop string (length-sorted, left-padded batches)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _StopOnText(StoppingCriteria):
            # HF's stop_strings also match across the prompt's end; this looks at the generated text only
            def __init__(self, tok, start: int, stop: list[str]):
                self.tok, self.start, self.stop = tok, start, stop

            def __call__(self, input_ids, scores, **kwargs):
                texts = self.tok.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
                return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)

        torch = self.torch
        stop = [s for s in stop or [] if s]
        enc = [self.encode(p) or [self._empty_prompt_id()] for p in prompts]
        for e in enc:
            if len(e) + max_new_tokens > self.max_length:
                raise PromptTooLongError(f"prompt of {len(e)} tokens + {max_new_tokens} new tokens exceeds the "
                                         f"model's context of {self.max_length}")
        res: list[str | None] = [None] * len(prompts)
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
        bs = max(1, self.batch_size)
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            n = max(len(enc[i]) for i in idx)
            ids = self._t([[self.pad_id] * (n - len(enc[i])) + enc[i] for i in idx])
            mask = self._t([[0] * (n - len(enc[i])) + [1] * len(enc[i]) for i in idx])
            kw = {"stopping_criteria": StoppingCriteriaList([_StopOnText(self.tokenizer, n, stop)])} if stop else {}
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, temperature=None, top_p=None, top_k=None,
                                          pad_token_id=self.pad_id, **kw)
            for j, i in enumerate(idx):
                res[i] = _cut(self.tokenizer.decode(gen[j, n:], skip_special_tokens=True), stop)
        return res


def _greedy_from_cache(backend: HFBackend, last, cache, b: int, lp: int, max_new_tokens: int, stop: list[str]) -> str:
    """Greedy continuation of row b of a prompt batch, from its slice of the prompt's key/value cache."""
    from transformers.cache_utils import DynamicCache

    c = DynamicCache(ddp_cache_data=[(layer.keys[b:b + 1, :, :lp], layer.values[b:b + 1, :, :lp]) for layer in cache.layers])
    dec, eos, ids = backend._decoder(), backend.tokenizer.eos_token_id, []
    logits = backend._head(last[None])[0]
    for step in range(max_new_tokens):
        t = int(logits.argmax())
        if t == eos:
            break
        ids.append(t)
        if step == max_new_tokens - 1 or any(x in backend.tokenizer.decode(ids, skip_special_tokens=True) for x in stop):
            break
        h = dec(input_ids=backend._t([[t]]), use_cache=True, **{backend._cache_kw: c}).last_hidden_state
        logits = backend._head(h[0, -1:])[0]
    return _cut(backend.tokenizer.decode(ids, skip_special_tokens=True), stop)


def score_and_generate(backend, requests: list[Request], max_new_tokens: int, stop: list[str] | None = None):
    """(loglikelihoods, greedy generations) for the requests. With HFBackend's fast path both come from one
    forward pass over each prompt: the candidates are scored from its key/value cache and the greedy
    answer is decoded from the same cache; any other backend gets the two calls."""
    stop = list(stop or [])
    if not isinstance(backend, HFBackend) or backend.naive or not backend._sliceable_cache:
        return backend.loglikelihoods(requests), backend.generate([p for p, _ in requests], max_new_tokens, stop)
    plans = [backend._plan(prompt, list(cands)) for prompt, cands in requests]
    backend.stats["requests"] += len(requests)
    backend.stats["candidates"] += sum(len(c) for _, c in requests)
    out: list[list] = [[None] * len(c) for _, c in requests]
    gens: list[str | None] = [None] * len(requests)

    def decode(r, last, cache, b, lp):
        gens[r] = _greedy_from_cache(backend, last, cache, b, lp, max_new_tokens, stop)

    with backend.torch.inference_mode():
        backend._fast(plans, out, on_prompt=decode)
        backend._joint_rows([(r, k, joint, b) for r, pl in enumerate(plans) for k, joint, b in pl.joint], out)
    rest = [i for i, g in enumerate(gens) if g is None]  # prompts without a cached candidate
    if rest:
        for i, g in zip(rest, backend.generate([requests[i][0] for i in rest], max_new_tokens, stop)):
            gens[i] = g
    scores = [[backend._with_chars(s, c) for s, c in zip(row, cands)] for row, (_, cands) in zip(out, requests)]
    return scores, gens


def _cache_of(output):
    return output.cache if hasattr(output, "cache") else output.past_key_values  # 5.x name, 4.x name


def _cut(text: str, stop: list[str]) -> str:
    for s in stop:
        if s and s in text:
            text = text[:text.index(s)]
    return text


def hf_backend(name: str, *, dtype: str = "float32", device: str = "cpu", adapter: str | None = None,
               batch_size: int = 8, trust_remote_code: bool = False, naive: bool = False) -> HFBackend:
    """Load a model by name (see `symtune.models`) and wrap it, with its identity for cache keys."""
    from symtune.models import load_model, model_identity

    model, tok = load_model(name, dtype=dtype, device=device, adapter=adapter, trust_remote_code=trust_remote_code)
    ident = {"backend": "hf", **model_identity(name, adapter=adapter, dtype=dtype)}
    return HFBackend(model, tok, batch_size=batch_size, identity=ident, naive=naive)


# ---- OpenAI-compatible completions server ------------------------------------------------------


class OpenAICompletionsBackend:
    """Scores through `/v1/completions` with `echo=True, logprobs=1, max_tokens=0`; greedy generation."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, max_length: int | None = None,
                 batch_size: int = 16, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model, self.batch_size, self.timeout = model, batch_size, timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        info = self._models_info()
        self.max_length = int(max_length or info.get("max_model_len") or 2048)
        self.identity = {"backend": "openai-completions", "base_url": self.base_url, "model": model,
                         "server_model": {k: info[k] for k in ("id", "root", "owned_by", "created") if k in info}}
        self._ntok: dict[str, int] = {}

    def _post(self, path: str, payload: dict) -> dict:
        import requests

        url = self.base_url + path
        try:
            r = requests.post(url, json=payload, headers=self.headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise BackendError(f"completions server at {self.base_url} is not reachable ({type(e).__name__}); "
                               "start it or fix --server") from e
        if r.status_code != 200:
            raise BackendError(f"completions server at {url} answered HTTP {r.status_code}: {r.text[:300]}")
        try:
            return r.json()
        except ValueError as e:
            raise BackendError(f"completions server at {url} did not answer with JSON: {r.text[:200]!r}") from e

    def _models_info(self) -> dict:
        import requests

        try:
            r = requests.get(self.base_url + "/v1/models", headers=self.headers, timeout=min(self.timeout, 30))
        except requests.RequestException as e:
            raise BackendError(f"completions server at {self.base_url} is not reachable ({type(e).__name__}); "
                               "start it or fix --server") from e
        if r.status_code != 200:
            return {}  # some servers have no /v1/models; scoring calls will tell whether they work
        for m in r.json().get("data", []):
            if m.get("id") == self.model:
                return m
        return {}

    def _echo(self, texts: list[str]) -> list[dict]:
        choices = []
        for s in range(0, len(texts), self.batch_size):
            chunk = texts[s:s + self.batch_size]
            resp = self._post("/v1/completions", {"model": self.model, "prompt": chunk, "echo": True,
                                                  "logprobs": 1, "max_tokens": 0, "temperature": 0.0})
            got = sorted(resp.get("choices", []), key=lambda c: c.get("index", 0))
            if len(got) != len(chunk):
                raise BackendError(f"server returned {len(got)} choices for {len(chunk)} prompts")
            for c in got:
                lp = c.get("logprobs") or {}
                if not lp.get("token_logprobs") or not lp.get("text_offset"):
                    raise BackendError(f"server at {self.base_url} returned no prompt log-probabilities; it must "
                                       "support echo=True with logprobs (as vLLM, llama.cpp server and TGI do)")
                choices.append(lp)
        return choices

    def loglikelihoods(self, requests: list[Request]) -> list[list[CandidateScore]]:
        texts, where = [], []
        for prompt, cands in requests:
            if not cands:
                raise ValueError(f"request has no candidates (prompt starts {prompt[:60]!r})")
            for c in cands:
                if not c:
                    raise ValueError("empty candidate")
                texts.append(prompt + c)
                where.append(len(prompt))
        res = []
        for lp, cut in zip(self._echo(texts), where):
            toks, lps, offs = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
            tops = lp.get("top_logprobs") or [None] * len(toks)
            # the candidate's tokens: every token that ends after the prompt's last character
            sel = [i for i in range(len(toks)) if offs[i] + len(toks[i]) > cut]
            if not sel or sel[0] == 0:
                raise BackendError("server gave no conditional log-probability for the candidate's first token")
            if any(lps[i] is None for i in sel):
                raise BackendError("server returned null log-probabilities inside the candidate")
            greedy = all(t and max(t.items(), key=lambda kv: kv[1])[0] == toks[i] for i, t in
                         ((i, tops[i]) for i in sel))
            res.append(CandidateScore(float(sum(lps[i] for i in sel)), len(sel), 0, greedy))
        out, i = [], 0
        for _, cands in requests:
            out.append([CandidateScore(s.logprob, s.n_tokens, len(c), s.is_greedy)
                        for s, c in zip(res[i:i + len(cands)], cands)])
            i += len(cands)
        return out

    def count_tokens(self, text: str) -> int:
        if text not in self._ntok:
            self._ntok[text] = len(self._echo([text])[0]["tokens"])
        return self._ntok[text]

    def generate(self, prompts: list[str], max_new_tokens: int = 16, stop: list[str] | None = None) -> list[str]:
        out = []
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s:s + self.batch_size]
            payload = {"model": self.model, "prompt": chunk, "max_tokens": max_new_tokens, "temperature": 0.0}
            if stop:
                payload["stop"] = list(stop)
            got = sorted(self._post("/v1/completions", payload).get("choices", []), key=lambda c: c.get("index", 0))
            if len(got) != len(chunk):
                raise BackendError(f"server returned {len(got)} choices for {len(chunk)} prompts")
            out += [_cut(c.get("text", ""), list(stop or [])) for c in got]
        return out
