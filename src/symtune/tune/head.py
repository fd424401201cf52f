"""LM head on target tokens only.

TRL's SFTTrainer computes the loss through a fused LM head (`fused_lm_head=True`). On GPUs with Triton it
projects only positions with a label; elsewhere (CPU) it projects every position. Symbol-tuning targets are
a few tokens after prompts of hundreds, so on CPU nearly all of that work is wasted. This replaces the fused
forward with one that gathers the labelled positions first, then uses TRL's own chunked log-prob kernel on
them; the result (log-probs, entropy, top-1) is identical, scattered back to the full shape.
"""

from __future__ import annotations

import functools
import types

import torch

from .data import IGNORE

# Configs with logit transformations beyond softcapping: keep TRL's head, which knows them all.
_LOGIT_SCALING = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def supports_target_only_head(model) -> bool:
    cfg = model.config.get_text_config()
    if any(getattr(cfg, a, None) is not None for a in _LOGIT_SCALING) or hasattr(cfg, "output_router_logits"):
        return False  # logit scaling or a MoE auxiliary loss: TRL's head handles these
    return model.get_output_embeddings() is not None


def add_target_only_head(model) -> bool:
    """Patch `model.forward(..., fused_lm_head=True)` to project labelled positions only. Returns False if skipped."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    if not supports_target_only_head(model):
        return False
    original_forward = model.forward
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                       ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return original_forward(*args, **kwargs, **extra)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, targets = hidden[:, :-1], labels[:, 1:]
        else:
            targets = shift_labels
        head = self.get_output_embeddings()
        targets = targets.to(head.weight.device)
        mask = targets != IGNORE
        out = ChunkedLogProbFunction.apply(hidden.to(head.weight.device)[mask], head.weight, head.bias,
                                           targets[mask], 1.0, 32768, softcap, 1.0, ("entropy", "is_top1"))
        log_probs, entropy, _, _, is_top1 = (None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x)
                                             for x in out)
        n = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / n, log_probs=log_probs, entropy=entropy,
                                   is_top1=is_top1, label_mask=mask)

    model.forward = types.MethodType(forward, model)
    return True


def target_only_head_wanted(device: torch.device) -> bool:
    """TRL's head already skips unlabelled positions where Triton runs (CUDA, XPU)."""
    from trl.kernels.chunked_logprob import _use_triton

    return not _use_triton(device)
