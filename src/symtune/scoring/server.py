"""Scoring through an OpenAI-compatible `/v1/completions` server with `echo` (vLLM, llama.cpp server, TGI)."""

from __future__ import annotations

from .rules import BackendError, CandidateScore, Request, cut_at_stop


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
            out += [cut_at_stop(c.get("text", ""), list(stop or [])) for c in got]
        return out

    def score_and_generate(self, requests: list[Request], max_new_tokens: int, stop: list[str] | None = None):
        """Two calls: the server scores and generates separately."""
        return self.loglikelihoods(requests), self.generate([p for p, _ in requests], max_new_tokens, stop)
