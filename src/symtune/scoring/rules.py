"""The two scoring rules, the score record and the protocol every backend follows.

Rank classification picks the label whose text, as it appears after the prompt, has the highest
log-probability (`acc`: summed; `acc_norm_tokens` / `acc_norm_chars`: divided by its token / char
count). Generation match compares a greedy answer, lightly normalised, with the label set.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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

    def score_and_generate(self, requests: list[Request], max_new_tokens: int,
                           stop: list[str]) -> tuple[list[list[CandidateScore]], list[str]]:
        """Both at once: what `symtune eval` asks of every query (a backend may share the work)."""
        ...

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


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text up to the first occurrence of any stop string."""
    for s in stop:
        if s and s in text:
            text = text[:text.index(s)]
    return text

