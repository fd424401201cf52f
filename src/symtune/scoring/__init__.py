"""Scoring: backends that give candidate log-likelihoods and greedy generations, and the two rules.

`rules`: rank classification and generation match, the `CandidateScore` record, the `Backend` protocol.
`hf`: `HFBackend`, exact packed scoring for any `transformers` causal LM (plans in `packing`).
`server`: `OpenAICompletionsBackend`, scoring through an OpenAI-compatible completions server.
"""

from .hf import HFBackend, hf_backend
from .rules import (
    RANK_RULES,
    Backend,
    BackendError,
    CandidateScore,
    PromptTooLongError,
    Request,
    cut_at_stop,
    generation_match,
    normalize_answer,
    rank_classify,
    rank_predictions,
)
from .server import OpenAICompletionsBackend

__all__ = [
    "RANK_RULES", "Backend", "BackendError", "CandidateScore", "HFBackend", "OpenAICompletionsBackend",
    "PromptTooLongError", "Request", "cut_at_stop", "generation_match", "hf_backend", "normalize_answer",
    "rank_classify", "rank_predictions",
]
