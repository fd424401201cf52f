"""`HFBackend`: exact candidate scoring and greedy answers for a `transformers` causal LM.

The packed path (default): each prompt and its candidates form one tree (see `packing`), trees are laid
side by side in rows without padding under a tree-shaped attention mask, and prompts that begin with the
same tokens (a shared exemplar set, one instruction) have that prefix forwarded once, its key/value cache
reused by every row that continues it. One forward gives every candidate's log-probabilities, and the
greedy answer too: a candidate that is the greedy path, followed by a stop, *is* the answer; otherwise the
answer is decoded from the prompt's slice of the same key/value cache. The LM head runs only on the rows
that are scored. `naive=True` runs the model's own forward per (prompt + candidate) instead: the
reference the packed path is tested against (and the fallback for models it cannot serve exactly).

Longer than our ~300-line guide on purpose: planning a batch, building its masks, reusing the prefix cache
and the two decoders all share one model, its attention layout and its caches; split across modules they
would pass those back and forth. What needs no model (the packing plan) is in `packing.py`.
"""

from __future__ import annotations

import inspect
import logging
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from .packing import Row, Tree, plan, rows_of, waves
from .rules import CandidateScore, PromptTooLongError, Request, cut_at_stop

log = logging.getLogger(__name__)

MASKED_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class _Plan:
    """How one request is scored: cached candidates continue the prompt ids; the rest are exact joints."""

    prompt_ids: list[int]
    cached: list[tuple[int, list[int]]]  # (candidate index, candidate ids after the prompt)
    joint: list[tuple[int, list[int], int]]  # (candidate index, joint ids, first candidate position)


@dataclass
class _Job:
    """One tree of the packed plan and what its results are for."""

    request: int
    candidates: list[int]  # the candidate index of each branch
    targets: list[list[int]]  # each branch's scored tokens
    greedy: bool  # this tree's context is the request's prompt and its greedy answer is wanted


@dataclass
class _Seated:
    """A row of a wave and where its group's prefix lies in the wave's prefix keys/values."""

    row: Row
    offset: int
    prefix: int  # its length (0: the row's trees share no prefix)

    @property
    def ids(self) -> list[int]:
        return self.row.ids


class HFBackend:
    """Exact candidate scoring and greedy generation for a `transformers` causal LM."""

    def __init__(self, model, tokenizer, batch_size: int = 8, identity: dict | None = None, *,
                 naive: bool = False, row_tokens: int | None = None, batch_tokens: int | None = None, min_prefix: int = 32,
                 wave_tokens: int | None = None, add_bos: bool | None = None):
        import torch

        self.torch = torch
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.naive = batch_size, naive
        self.min_prefix = min_prefix
        self.identity = identity or {"backend": "hf", "model": getattr(model, "name_or_path", type(model).__name__),
                                     "dtype": str(model.dtype).removeprefix("torch.")}
        cfg = model.config
        n_ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        tml = getattr(tokenizer, "model_max_length", None)
        self.max_length = int(min(x for x in (n_ctx, tml if tml and tml < 10**7 else None, 10**9) if x))
        self.device = next(model.parameters()).device
        # A CPU is busy with a few thousand tokens and pays for every masked-out attention pair of a long row
        # (rows of 512 and batches of 2048 tokens scored the per-query bench's 60 prompts ~10% faster than 1024
        # and 4096: bench/eval_vs_lm_eval.py); an accelerator wants many more tokens per forward.
        cpu = self.device.type == "cpu"
        self.row_tokens = row_tokens or (512 if cpu else 1024)
        self.batch_tokens = batch_tokens or (2048 if cpu else 32768)
        # Prefix groups forwarded together (a wave) share forwards: worth it where a forward's fixed cost (15-26 ms
        # of Python and dispatch for 30 layers, measured on a CPU) is the time of thousands of tokens, as on a GPU;
        # on a CPU it is the time of ~30 tokens of a 135M model, less than rows of several groups lose to padding:
        # one group a wave (64 shared-exemplar requests scored and answered, 135M: 24.7-26.4 s that way, 30.0 s in
        # waves of 2048 tokens; bench/scoring_modes.py)
        self.wave_tokens = (0 if cpu else self.batch_tokens) if wave_tokens is None else wave_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self._prefix = self._bos_prefix() if add_bos is None else ([tokenizer.bos_token_id] if add_bos else [])
        self._stop_id_cache: dict[tuple[str, ...], frozenset[int]] = {}
        self.stats = {"requests": 0, "candidates": 0, "prefix_fallbacks": 0, "forward_tokens": 0, "padded_tokens": 0,
                      "shared_prefix_tokens": 0, "rows": 0, "lm_head_rows": 0, "decoded_prompts": 0,
                      "forwards": 0}
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self._text_cfg = text_cfg
        self._layer_types = sorted(set(getattr(text_cfg, "layer_types", None) or ["full_attention"]))
        # transformers 5.x calls the cache argument `cache`, 4.x `past_key_values`
        self._cache_kw = "cache" if "cache" in inspect.signature(self._decoder().forward).parameters else "past_key_values"
        if not naive:
            self._check_packed_path()

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

    def _stop_ids(self, stop: list[str]) -> frozenset[int]:
        """The stop strings that are one special token (a chat template's end of turn): decoded answers never
        show those, so generation stops at their id. Kept per list of stops: every greedy answer asks."""
        key = tuple(stop)
        if key not in self._stop_id_cache:
            out = set()
            for s in stop:
                ids = self.tokenizer(s, add_special_tokens=False).input_ids
                if len(ids) == 1 and not self.tokenizer.decode(ids, skip_special_tokens=True):
                    out.add(ids[0])
            self._stop_id_cache[key] = frozenset(out)
        return self._stop_id_cache[key]

    def _check_room(self, n_prompt: int, max_new: int) -> None:
        if n_prompt + max_new > self.max_length:
            raise PromptTooLongError(f"prompt of {n_prompt} tokens + {max_new} new tokens exceeds the model's "
                                     f"context of {self.max_length}")

    def _empty_prompt_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else self.pad_id

    def _plans(self, requests: list[Request]) -> list[_Plan]:
        """Every request's plan, from one tokenizer call for all their texts (a fast tokenizer encodes a batch on
        all cores: per request, this is most of the host's work)."""
        texts = []
        for prompt, cands in requests:
            if not cands:
                raise ValueError(f"request has no candidates (prompt starts {prompt[:60]!r})")
            texts += [prompt] + [prompt + c for c in cands]
        enc = self.tokenizer(texts, add_special_tokens=False).input_ids if texts else []
        out, at = [], 0
        for prompt, cands in requests:
            out.append(self._plan(prompt, list(cands), enc[at], enc[at + 1:at + 1 + len(cands)]))
            at += 1 + len(cands)
        return out

    def _plan(self, prompt: str, candidates: list[str], prompt_ids: list[int], joint_ids: list[list[int]]) -> _Plan:
        p = self._prefix + prompt_ids
        start = [] if p else [self._empty_prompt_id()]
        p = start + p  # an empty prompt is conditioned on EOS, as lm-eval does
        plan_ = _Plan(p, [], [])
        for k, (cand, ids) in enumerate(zip(candidates, joint_ids)):
            if not cand:
                raise ValueError(f"empty candidate #{k} for prompt starting {prompt[:60]!r}")
            joint = start + self._prefix + ids
            if len(joint) > self.max_length:
                raise PromptTooLongError(f"prompt + candidate {cand!r} is {len(joint)} tokens, more than the "
                                         f"model's context of {self.max_length}; drop exemplars before scoring")
            if joint[:len(p)] == p and len(joint) > len(p):
                plan_.cached.append((k, joint[len(p):]))
            else:
                # the candidate's first token swallows the end of the prompt (or re-splits it): score the
                # exact joint tokenisation from the first token that differs
                b = next((i for i, (x, y) in enumerate(zip(joint, p)) if x != y), min(len(p), len(joint) - 1))
                plan_.joint.append((k, joint, max(b, 1)))
                self.stats["prefix_fallbacks"] += 1
        return plan_

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
        cfg = self._text_cfg
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = self.torch.tanh(logits / cap) * cap
        if getattr(cfg, "logit_scale", None) and cfg.model_type.startswith("cohere"):
            logits = logits * cfg.logit_scale
        if getattr(cfg, "logits_scaling", None):
            logits = logits / cfg.logits_scaling
        return logits

    def _new_cache(self, kv=None):
        from transformers.cache_utils import DynamicCache

        return DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()

    def _check_packed_path(self) -> None:
        """The packed path builds its own attention masks and reimplements the LM head: check it against the
        model's own forward once (shared prefix, sibling candidates, a prompt past any sliding window);
        where it differs or cannot run, score with the naive path and say so."""
        impl = getattr(self.model.config, "_attn_implementation", None) or "sdpa"
        unsupported = [t for t in self._layer_types if t not in MASKED_LAYER_TYPES]
        why = (f"attention implementation {impl!r} takes no tree-shaped masks (load with attn_implementation='sdpa')"
               if impl not in ("sdpa", "eager") else f"layer types {unsupported} are not served" if unsupported else None)
        if why is None:
            shared = "Input: a check of the packed scoring path, long enough to share a prefix\nOutput: yes\n\n" * 3
            probe = [(shared + "Input: one\nOutput:", [" yes", " no way", " maybe so"]),
                     (shared + "Input: two\nOutput:", [" no", " maybe so"]), ("Q: other\nA:", [" a b c", " d"])]
            window = getattr(self._text_cfg, "sliding_window", None)
            if "sliding_attention" in self._layer_types and window and window + 40 < self.max_length:
                probe.append(("word " * (window + 20) + "\nA:", [" yes", " no way"]))
            try:
                with self.torch.inference_mode():
                    mine, ref = self._packed(probe, None)[0], self._naive(probe)
            except (AttributeError, TypeError, NotImplementedError, ValueError, RuntimeError, IndexError) as e:
                why = f"it failed on this model ({type(e).__name__}: {e})"
            else:
                err = max(abs(a.logprob - b.logprob) for ra, rb in zip(mine, ref) for a, b in zip(ra, rb))
                tol = 1e-3 if self.model.dtype == self.torch.float32 else 0.5  # half precision: kernels differ
                if err > tol:
                    why = f"it differs from the model's own forward by {err:.3g} nats"
        if why:
            log.warning("packed scoring unavailable for %s: %s; using the naive path (one forward per candidate)",
                        type(self.model).__name__, why)
            self.naive = True
        self.stats = dict.fromkeys(self.stats, 0)

    # -- scoring
    def loglikelihoods(self, requests: list[Request]) -> list[list[CandidateScore]]:
        return self._score(requests, None)[0]

    def score_and_generate(self, requests: list[Request], max_new_tokens: int, stop: list[str] | None = None):
        """(log-likelihoods, greedy answers): on the packed path both come from one forward per prompt."""
        return self._score(requests, (max_new_tokens, [s for s in stop or [] if s]))

    def _score(self, requests: list[Request], gen: tuple[int, list[str]] | None):
        with self.torch.inference_mode():
            if self.naive:
                scores = self._naive(requests)
                gens = self.generate([p for p, _ in requests], *gen) if gen else None
            else:
                scores, gens = self._packed(requests, gen)
        scores = [[CandidateScore(s.logprob, s.n_tokens, len(c), s.is_greedy) for s, c in zip(row, cands)]
                  for row, (_, cands) in zip(scores, requests)]
        return scores, gens

    def _naive(self, requests: list[Request]) -> list[list[CandidateScore]]:
        plans = self._plans(requests)
        self._count(requests)
        out = [[None] * len(c) for _, c in requests]
        for r, pl in enumerate(plans):
            for k, cids in pl.cached:
                out[r][k] = self._naive_one(pl.prompt_ids + cids, len(pl.prompt_ids))
            for k, joint, b in pl.joint:
                out[r][k] = self._naive_one(joint, b)
        return out

    def _count(self, requests: list[Request]) -> None:
        self.stats["requests"] += len(requests)
        self.stats["candidates"] += sum(len(c) for _, c in requests)

    def _naive_one(self, ids: list[int], start: int) -> CandidateScore:
        """Reference: the model's own forward over the whole sequence, full logits, no cache."""
        torch = self.torch
        self.stats["forward_tokens"] += len(ids)
        logits = self.model(input_ids=self._t([ids])).logits[0].float()
        logp = torch.log_softmax(logits[start - 1:len(ids) - 1], dim=-1)
        tgt = self._t(ids[start:])
        lp = logp.gather(1, tgt[:, None])[:, 0].sum().item()
        return CandidateScore(lp, len(tgt), 0, bool((logits[start - 1:len(ids) - 1].argmax(-1) == tgt).all()))

    def _jobs(self, requests: list[Request], max_new: int | None) -> tuple[list[Tree], list[_Job]]:
        """The trees to forward: one per prompt (its cached candidates as branches; with generation each branch
        is fed whole, so the token after it is known too), one per candidate that re-tokenises the prompt."""
        trees, jobs = [], []
        want_greedy = max_new is not None
        for r, pl in enumerate(self._plans(requests)):
            if want_greedy:
                self._check_room(len(pl.prompt_ids), max_new)
            if pl.cached or want_greedy:
                trees.append(Tree(pl.prompt_ids, [c if want_greedy else c[:-1] for _, c in pl.cached]))
                jobs.append(_Job(r, [k for k, _ in pl.cached], [c for _, c in pl.cached], want_greedy))
            for k, joint, b in pl.joint:
                trees.append(Tree(joint[:b], [joint[b:-1]]))
                jobs.append(_Job(r, [k], [joint[b:]], False))
        return trees, jobs

    def _packed(self, requests: list[Request], gen: tuple[int, list[str]] | None):
        with self._attention_kernels():
            return self._packed_on(requests, gen)

    def _attention_kernels(self):
        """How the packed forwards' masked attention should run on this device."""
        if self.device.type == "cpu":
            # transformers' SDPA path copies every key/value head for each query head it serves when a mask is
            # given (grouped-query models: 3x for SmolLM2); torch's CPU kernel takes the grouped heads as they
            # are (`enable_gqa`), with the same log-likelihoods: per-query scoring ~2% faster (60 bench requests, A/B)
            return _env("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        if self.device.type == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            # cuDNN's attention builds a new plan for every new masked shape (milliseconds of CPU each): every
            # packed batch has its own shape, so use the memory-efficient kernel, which takes masks as they come
            return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
        return nullcontext()

    def _packed_on(self, requests: list[Request], gen: tuple[int, list[str]] | None):
        trees, jobs = self._jobs(requests, gen[0] if gen else None)
        self._count(requests)
        scores: list[list[CandidateScore | None]] = [[None] * len(c) for _, c in requests]
        gens: list[str | None] | None = [None] * len(requests) if gen else None
        for wave in waves(plan(trees, self.row_tokens, self.min_prefix), self.wave_tokens):
            kv, where = self._forward_prefixes([g.prefix for g in wave])
            for g, (_, s) in zip(wave, where):
                if s:
                    self.stats["shared_prefix_tokens"] += s * (sum(len(r.placed) for r in g.rows) - 1)
            rows = [_Seated(row, *w) for g, w in zip(wave, where) for row in g.rows]
            for batch in _batches(rows, self.batch_tokens):
                self._forward_rows(batch, kv, trees, jobs, scores, gens, gen)
        return scores, gens

    def _forward(self, rows, prefix_lens: list[int], cache):
        """One decoder forward of the rows, padded to a common width n, row i after the first prefix_lens[i] of
        the cache's S = max(prefix_lens) positions: (last hidden states, n). A padding token is a tree of its own
        (owner -1 - its place), seeing itself alone."""
        n = max(len(row.ids) for row in rows)
        if self.device.type == "cuda":  # aligned rows keep the fused attention kernels (they need % 8)
            n = -(-n // 16) * 16
        pad = [n - len(row.ids) for row in rows]
        ids = self._t([row.ids + [self.pad_id] * k for row, k in zip(rows, pad)])
        pos = self._t([row.positions + [0] * k for row, k in zip(rows, pad)])
        own = self._t([row.owner + list(range(-1, -1 - k, -1)) for row, k in zip(rows, pad)])
        br = self._t([row.branch + [-1] * k for row, k in zip(rows, pad)])
        s = self._t(prefix_lens)
        kw = {self._cache_kw: cache} if cache is not None else {}
        hidden = self._decoder()(input_ids=ids, position_ids=pos + s[:, None],
                                 attention_mask=self._masks(pos, own, br, s, max(prefix_lens)),
                                 use_cache=cache is not None, **kw).last_hidden_state
        self.stats["forwards"] += 1
        self.stats["forward_tokens"] += n * len(rows)
        self.stats["padded_tokens"] += sum(pad)
        return hidden, n

    def _forward_prefixes(self, prefixes: list[list[int]]):
        """Forward the non-empty prefixes, packed in rows: ([(keys, values) per layer, each (kv heads, tokens, head
        dim) with every prefix's tokens side by side], [(offset, length) of each prefix in them])."""
        torch = self.torch
        where = [(0, 0)] * len(prefixes)
        todo = [i for i, p in enumerate(prefixes) if p]
        if not todo:
            return None, where
        parts, offset = [], 0
        for batch in _batches(rows_of([prefixes[i] for i in todo], self.row_tokens), self.batch_tokens):
            cache = self._new_cache()
            _, n = self._forward(batch, [0] * len(batch), cache)
            for b, row in enumerate(batch):
                for p in row.placed:
                    where[todo[p.tree]] = (offset + b * n + p.start, p.suffix)
            # (rows, heads, tokens, dim) -> (heads, rows x tokens, dim): one flat run of positions
            parts.append([tuple(t.transpose(0, 1).reshape(t.shape[1], -1, t.shape[3]) for t in (layer.keys, layer.values))
                          for layer in cache.layers])
            offset += len(batch) * n
        kv = parts[0] if len(parts) == 1 else [tuple(torch.cat([p[i][j] for p in parts], 1) for j in (0, 1))
                                               for i in range(len(parts[0]))]
        return kv, where

    def _forward_rows(self, batch: list[_Seated], kv, trees, jobs, scores, gens, gen) -> None:
        """One forward of rows (of any groups of the wave), each attending to its own group's prefix."""
        torch = self.torch
        S = max(x.prefix for x in batch)
        cache = None
        if S:
            # each row's prefix keys/values gathered to the front of its cache, padded to S (masked out)
            first, s = self._t([x.offset for x in batch]), self._t([x.prefix for x in batch])
            idx = (first[:, None] + torch.minimum(self._t(range(S))[None], (s - 1).clamp(min=0)[:, None])).reshape(-1)
            cache = self._new_cache([tuple(t.index_select(1, idx).view(t.shape[0], len(batch), S, t.shape[2]).transpose(0, 1)
                                           for t in layer) for layer in kv])
        elif gen:
            cache = self._new_cache()
        hidden, n = self._forward([x.row for x in batch], [x.prefix for x in batch], cache)
        self.stats["rows"] += len(batch)
        self._read(batch, hidden.reshape(-1, hidden.shape[-1]), n, S, trees, jobs, scores, gens, gen, cache)

    def _masks(self, pos, own, br, s, S: int):
        """Each row's attention: every token sees its group's prefix (the first s[row] of S prefix columns), its
        own tree's context up to itself and its own branch up to itself; sliding-window layers also cut what lies
        a window or more behind. A tensor, or {layer type: tensor} for models that mix them."""
        torch = self.torch
        vis = ((own[:, :, None] == own[:, None, :]) & (pos[:, None, :] <= pos[:, :, None])
               & ((br[:, None, :] == -1) | (br[:, None, :] == br[:, :, None])))
        if S:
            cols = self._t(range(S))
            vis = torch.cat([(cols[None, :] < s[:, None])[:, None, :].expand(-1, vis.shape[1], -1), vis], 2)
        masks = {}
        for kind in self._layer_types:
            m = vis
            if kind == "sliding_attention":
                q = pos + s[:, None]
                k = torch.cat([self._t(range(S))[None].expand(len(q), -1), q], 1)
                m = vis & (q[:, :, None] - k[:, None, :] < self._text_cfg.sliding_window)
            if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":
                m = torch.zeros(m.shape, dtype=self.model.dtype, device=m.device).masked_fill(~m, torch.finfo(self.model.dtype).min)
            masks[kind] = m[:, None]
        return masks if len(masks) > 1 or "full_attention" not in masks else masks["full_attention"]

    def _read(self, batch, hidden, n: int, S: int, trees, jobs, scores, gens, gen, cache) -> None:
        """Score every branch of the batch's rows from one LM-head call (hidden: the rows flattened, n tokens
        each); settle or decode each greedy answer."""
        torch = self.torch
        sel: list[int] = []  # flat hidden rows that go through the head
        pred: list[int] = []  # for each scored token: its row in `sel`
        tgt: list[int] = []
        spans = []  # per branch: (first scored token, count, row in sel of the token after it)
        last_row = []  # per placed tree: the row in sel of its context's last token
        for b, seated in enumerate(batch):
            base = b * n
            for p in seated.row.placed:
                job, tree = jobs[p.tree], trees[p.tree]
                last_row.append(len(sel))
                sel.append(base + p.start + p.suffix - 1)
                for b_start, fed, target in zip(p.branch_starts, tree.branches, job.targets):
                    rows = [last_row[-1]] + list(range(len(sel), len(sel) + len(fed)))
                    sel += range(base + b_start, base + b_start + len(fed))
                    spans.append((len(pred), len(target), rows[len(target)] if len(rows) > len(target) else None))
                    pred += rows[:len(target)]
                    tgt += target
        self.stats["lm_head_rows"] += len(sel)
        logits = self._head(hidden[self._t(sel)])
        top = logits.argmax(-1)
        rows, want = self._t(pred), self._t(tgt)
        lp = torch.log_softmax(logits, dim=-1)[rows, want]
        hit = top[rows] == want
        lp, hit, top = lp.tolist(), hit.tolist(), top.tolist()  # one transfer for the whole batch
        spans, places = iter(spans), iter(last_row)
        for b, seated in enumerate(batch):
            for p in seated.row.placed:
                job, last = jobs[p.tree], next(places)
                greedy_paths = []
                for k, target in zip(job.candidates, job.targets):
                    a, m, after = next(spans)
                    is_greedy = all(hit[a:a + m])
                    scores[job.request][k] = CandidateScore(sum(lp[a:a + m]), m, 0, is_greedy)
                    if is_greedy and after is not None:
                        greedy_paths.append(target + [top[after]])
                if job.greedy:
                    known = max(greedy_paths, key=len) if greedy_paths else [top[last]]
                    gens[job.request] = self._greedy(known, p, cache, b, seated.prefix, S, *gen)

    def _greedy(self, known: list[int], placed, cache, b: int, s: int, S: int, max_new: int, stop: list[str]) -> str:
        """The greedy answer, from the tokens the forward already showed to be greedy; decoding further from
        the prompt's own slice of the row's key/value cache (its s prefix tokens of the S prefix columns, then its
        own tokens in the row) only when those run out before a stop."""
        ends = {self.tokenizer.eos_token_id} | self._stop_ids(stop)
        ids: list[int] = []
        kv = None
        for step in range(max_new):
            if step < len(known):
                t = known[step]
            else:
                if kv is None:  # the prompt's keys/values: the group prefix, then its own tokens in the row
                    a, z = S + placed.start, S + placed.start + placed.suffix
                    keep = self._t(list(range(s)) + list(range(a, z)))
                    kv = self._new_cache([(layer.keys[b:b + 1].index_select(2, keep), layer.values[b:b + 1].index_select(2, keep))
                                          for layer in cache.layers])
                    self.stats["decoded_prompts"] += 1
                    fed = ids  # the answer so far is not in the cache yet
                else:
                    fed = ids[-1:]
                self.stats["forwards"] += 1
                h = self._decoder()(input_ids=self._t([fed]), use_cache=True, **{self._cache_kw: kv}).last_hidden_state
                t = int(self._head(h[0, -1:])[0].argmax())
            if t in ends:
                break
            ids.append(t)
            if step == max_new - 1 or any(x in self.tokenizer.decode(ids, skip_special_tokens=True) for x in stop):
                break
        return cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)

    # -- generation alone
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
        stop_ids = self._stop_ids(stop)
        enc = [self.encode(p) or [self._empty_prompt_id()] for p in prompts]
        for e in enc:
            self._check_room(len(e), max_new_tokens)
        res: list[str | None] = [None] * len(prompts)
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
        bs = max(1, self.batch_size)
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            n = max(len(enc[i]) for i in idx)
            ids = self._t([[self.pad_id] * (n - len(enc[i])) + enc[i] for i in idx])
            mask = self._t([[0] * (n - len(enc[i])) + [1] * len(enc[i]) for i in idx])
            kw = {"stopping_criteria": StoppingCriteriaList([_StopOnText(self.tokenizer, n, stop)])} if stop else {}
            if stop_ids:
                kw["eos_token_id"] = sorted(stop_ids | set(_ids(self.model.generation_config.eos_token_id)))
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, temperature=None, top_p=None, top_k=None,
                                          pad_token_id=self.pad_id, **kw)
            for j, i in enumerate(idx):
                res[i] = cut_at_stop(self.tokenizer.decode(gen[j, n:], skip_special_tokens=True), stop)
        return res


@contextmanager
def _env(name: str, value: str):
    """The environment variable set for the duration of the block, then as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _ids(token_ids) -> list[int]:
    """A generation config's eos_token_id (None, one id or a list) as a list."""
    return [] if token_ids is None else [token_ids] if isinstance(token_ids, int) else list(token_ids)


def _batches(rows, batch_tokens: int) -> list[list]:
    """Rows, longest first, in batches of at most `batch_tokens` tokens counting the padding to the longest."""
    out, cur = [], []
    for row in sorted(rows, key=lambda r: -len(r.ids)):
        if cur and len(cur[0].ids) * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(row)
    return out + ([cur] if cur else [])


def hf_backend(name: str, *, dtype: str = "float32", device: str = "cpu", adapter: str | None = None,
               batch_size: int = 8, trust_remote_code: bool = False, naive: bool = False) -> HFBackend:
    """Load a model by name (see `symtune.models`) and wrap it, with its identity for cache keys."""
    from symtune.models import load_model, model_identity

    model, tok = load_model(name, dtype=dtype, device=device, adapter=adapter, trust_remote_code=trust_remote_code)
    ident = {"backend": "hf", **model_identity(name, adapter=adapter, dtype=dtype)}
    return HFBackend(model, tok, batch_size=batch_size, identity=ident, naive=naive)
