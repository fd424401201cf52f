"""TRL's SFTTrainer with three additions, and the callbacks of a tuning run.

- checkpoints are written to `checkpoints/.staging/` and renamed into place only when complete (a marker
  file inside), so a run killed mid-save never leaves a checkpoint that `--resume` would pick up;
- exact token counts (real tokens and target tokens, all processes) for the log and throughput, kept in each
  checkpoint so that a resumed run reports the tokens of the whole run;
- optionally the target-only LM head (head.py).
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import rotate_checkpoints
from trl import SFTTrainer

from ..files import publish_dir
from .config import TuneError
from .data import IGNORE

log = logging.getLogger(__name__)

COMPLETE_MARKER = "symtune_checkpoint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under `root` (a `checkpoint-N` directory holding the marker file)."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = []
    for d in root.iterdir():
        m = _CHECKPOINT.match(d.name)
        if m and d.is_dir():
            if (d / COMPLETE_MARKER).is_file():
                found.append((int(m.group(1)), d))
            else:
                log.warning("ignoring %s: no %s, so it may be incomplete", d, COMPLETE_MARKER)
    return max(found)[1] if found else None


class SymtuneTrainer(SFTTrainer):
    def __init__(self, *args, target_only_head: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._staging_root: str | None = None
        self.tokens_seen = 0
        self.target_tokens_seen = 0
        self.tokens_at_start = self.target_tokens_at_start = 0  # counts when this process began (a resume: > 0)
        self.target_only_head = False
        if target_only_head:
            from .head import add_target_only_head

            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            self.target_only_head = add_target_only_head(base)

    # ---- token counts -------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            real = inputs.pop("num_real_tokens", None)
            if real is None:
                real = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].numel()
            targets = (inputs["labels"][:, 1:] != IGNORE).sum()
            counts = torch.stack([torch.as_tensor(real, device=targets.device), targets])
            counts = self.accelerator.reduce(counts, reduction="sum") if self.accelerator.num_processes > 1 else counts
            self.tokens_seen += int(counts[0])
            self.target_tokens_seen += int(counts[1])
        else:
            inputs.pop("num_real_tokens", None)
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if model.training:
            self._metrics["train"]["num_tokens"] = [self.tokens_seen]
            self._metrics["train"]["num_target_tokens"] = [self.target_tokens_seen]
        return loss

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint:
            self.tokens_seen, self.target_tokens_seen = token_counts_at(Path(resume_from_checkpoint))
            self.tokens_at_start, self.target_tokens_at_start = self.tokens_seen, self.target_tokens_seen
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ---- atomic checkpoints -------------------------------------------------------------------
    def _get_output_dir(self, trial):
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        root = Path(self.args.output_dir)
        staging = root / ".staging"
        name = f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging / name, ignore_errors=True)
            staging.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging)
        try:
            Trainer._save_checkpoint(self, model, trial)  # not TRL's, which also writes a model card each time
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                src = staging / name
                (src / COMPLETE_MARKER).write_text(json.dumps({
                    "step": self.state.global_step, "time": time.time(),
                    "tokens": self.tokens_seen, "target_tokens": self.target_tokens_seen}))
                publish_dir(src, root / name, durable=True)  # replaces the same step saved again (after a resume)
                rotate_checkpoints(str(root), save_total_limit=self.args.save_total_limit)
                try:
                    staging.rmdir()
                except OSError:
                    pass  # not empty: another process's files (multi-node without a shared disk)
        except OSError as e:
            if self.args.should_save:
                shutil.rmtree(staging / name, ignore_errors=True)
            prev = last_checkpoint(root)
            full = " (disk full)" if e.errno == errno.ENOSPC else ""
            raise TuneError(
                f"could not write {name}{full}: {e}. Nothing was corrupted: the previous checkpoint "
                f"{prev if prev else '(none)'} is intact. Free space and rerun with --resume."
            ) from e
        finally:
            self._staging_root = None


def token_counts_at(checkpoint: Path) -> tuple[int, int]:
    """(tokens, target tokens) trained on up to `checkpoint`: from its marker file, or, for a checkpoint written
    before the marker held them, from the trainer state's last log entry when that entry is the checkpoint's step."""
    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    if "tokens" in marker:
        return int(marker["tokens"]), int(marker["target_tokens"])
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    logged = [e for e in state.get("log_history", []) if "num_tokens" in e]
    if logged and logged[-1].get("step") == state.get("global_step"):
        return int(logged[-1]["num_tokens"]), int(logged[-1]["num_target_tokens"])
    raise TuneError(f"{checkpoint} does not record how many tokens were trained on before it (written by an older "
                    f"symtune with a logging interval that skips its step), so a resumed run would under-report its "
                    f"tokens. Resume from a checkpoint of a run logged every step, or start the run over.")


class JsonlLogCallback(TrainerCallback):
    """Every log entry (loss, lr, grad norm, tokens, throughput, eval results) as one JSON line."""

    def __init__(self, path: str | Path, trainer_ref: Callable[[], SymtuneTrainer]):
        self.path = Path(path)
        self.trainer_ref = trainer_ref
        self._last = None  # (time, tokens, target tokens) at the previous log

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer_ref()
        self._last = (time.time(), t.tokens_seen, t.target_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
        if "loss" in logs and self._last is not None:
            t = self.trainer_ref()
            now = time.time()
            dt = max(now - self._last[0], 1e-9)
            entry["tokens_per_s"] = (t.tokens_seen - self._last[1]) / dt
            entry["target_tokens_per_s"] = (t.target_tokens_seen - self._last[2]) / dt
            self._last = (now, t.tokens_seen, t.target_tokens_seen)
        with self.path.open("a") as f:
            f.write(json.dumps(entry, default=float) + "\n")


@contextmanager
def _plain_forward(model):
    """The model's own forward for the block. Under mixed precision accelerate wraps `model.forward` in autocast
    (keeping the original as `_original_forward`); the evaluation's packed path calls the decoder below that
    wrapper, so the two would score at different precisions (0.002-0.06 nats apart), the packed path's check
    would fail and the hook would fall back to one forward per candidate. The weights are fp32: score in fp32,
    as the evaluation of the saved model will."""
    wrapped = model.__dict__.get("forward")
    if wrapped is None or getattr(model, "_original_forward", None) is None:
        yield
        return
    model.forward = model._original_forward
    try:
        yield
    finally:
        model.forward = wrapped


class EvalHookCallback(TrainerCallback):
    """Calls `eval_fn(model, tokenizer) -> dict` every `every` steps (and before the first) and logs the result.

    The function runs on every process (needed when weights are sharded, as with FSDP), in eval mode and
    without gradients; its numbers are logged with an `icl/` prefix beside the loss.
    """

    def __init__(self, eval_fn: Callable, every: int, trainer_ref: Callable[[], SymtuneTrainer], at_start: bool = True):
        self.eval_fn, self.every, self.trainer_ref, self.at_start = eval_fn, every, trainer_ref, at_start
        self.history: list[dict] = []

    def _run(self, state):
        t = self.trainer_ref()
        model = t.accelerator.unwrap_model(t.model)
        was_training = model.training
        model.eval()
        start = time.time()
        try:
            with torch.no_grad(), _plain_forward(model):
                result = self.eval_fn(model, t.processing_class)
        finally:
            model.train(was_training)
        if not isinstance(result, dict):
            raise TuneError(f"eval_fn must return a dict of numbers, got {type(result).__name__}")
        logs = {f"icl/{k}": float(v) for k, v in result.items()}
        logs["icl/seconds"] = time.time() - start
        self.history.append({"step": state.global_step, **logs})
        should_log = t.control.should_log  # set for this step's loss; logging here must not consume it
        Trainer.log(t, logs)  # Trainer's, not TRL's: TRL's would flush the running train metrics here
        t.control.should_log = should_log  # (on_log clears it: the step's loss went unlogged, the next averaged two)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.at_start and state.global_step == 0:
            self._run(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._run(state)


class ProgressCallback(TrainerCallback):
    """Tells `report(fraction of the steps done, seconds since training began)` at the start and after every
    step, on the main process (how `symtune run` keeps its whole-run time estimate)."""

    def __init__(self, report: Callable[[float, float], None]):
        self.report, self.t0 = report, None

    def _tell(self, state) -> None:
        self.t0 = self.t0 or time.time()
        if state.is_world_process_zero:
            self.report(state.global_step / state.max_steps if state.max_steps else 0.0, time.time() - self.t0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._tell(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._tell(state)


class TimeLimitCallback(TrainerCallback):
    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.start = None
        self.stopped_at = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.start > self.seconds and state.global_step < state.max_steps:
            control.should_training_stop = True  # (the last step is not "stopped by the limit")
            self.stopped_at = state.global_step
