"""The whole-run time estimate of `symtune run`, from what the run itself has measured.

Each stage has a size in *work units*: an evaluation's prompt tokens, and for tuning 1.8 units per
training token. (FLOPs alone would say 3, a forward and a backward pass; but evaluation also pads
batches, scores every label and decodes answers. In the default run on 2 CPU cores a training token took
as long as 1.8 evaluation prompt tokens: 40,960 training tokens in 195 s; 101,260 prompt tokens in 272 s
and in 246 s, loading included.) A running stage projects its own remaining time from its progress; a
stage not started yet takes the seconds per unit measured on a stage of the same kind (the tuned model's
evaluation is timed by the base model's), else on the other kind, converted through the units. Before anything has been measured there is no estimate, and
the line says so rather than guess. Stages finished in an earlier invocation count with their recorded
seconds as measurements. The conversion between kinds depends on the hardware, so an estimate that uses
it is marked `~`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

TRAIN_UNITS_PER_TOKEN = 1.8


@dataclass
class _Stage:
    kind: str  # "tune", "eval" or "other"
    units: float | None = None  # work size; None: unknown
    seconds: float | None = None  # measured duration once done
    started: float | None = None
    fraction: float = 0.0  # of a running stage
    base: float | None = None  # the fraction first reported (work resumed from an earlier invocation)
    base_time: float | None = None


class RunEta:
    def __init__(self, sizes: dict[str, tuple[str, float | None]], caps: dict[str, float] | None = None, clock=time.time):
        """`sizes`: stage -> (kind, work units or None), in run order; `caps`: stage -> the most seconds it
        can take (tuning's time limit)."""
        self.clock = clock
        self.t0 = clock()
        self.stages = {name: _Stage(kind, units) for name, (kind, units) in sizes.items()}
        self.caps = caps or {}

    def start(self, name: str) -> None:
        self.stages[name].started = self.clock()

    def progress(self, name: str, fraction: float) -> None:
        """The running stage is `fraction` done. The first report is the starting point: work resumed from a
        checkpoint or cache took no time in this invocation."""
        st = self.stages[name]
        st.fraction = min(max(fraction, 0.0), 1.0)
        if st.base is None:
            st.base, st.base_time = st.fraction, self.clock()

    def _live(self, st: _Stage) -> float | None:
        """Seconds left in a running stage, from its own pace since its first report."""
        if st.base is None or st.fraction <= st.base:
            return None
        return (self.clock() - st.base_time) * (1 - st.fraction) / (st.fraction - st.base)

    def finish(self, name: str, seconds: float | None = None) -> None:
        """The stage is done; `seconds`: its recorded duration (a stage done in an earlier invocation),
        else the time since start()."""
        st = self.stages[name]
        st.fraction = 1.0
        st.seconds = seconds if seconds is not None else (self.clock() - st.started if st.started is not None else None)

    def _rate(self, kind: str) -> float | None:
        """Measured seconds per unit: finished stages of this kind, else the running one."""
        done = [(s.seconds, s.units * (1 - (s.base or 0.0))) for s in self.stages.values()
                if s.kind == kind and s.seconds and s.units and s.fraction >= 1.0 and (s.base or 0.0) < 1.0]  # fmt: skip
        if done:
            return sum(t for t, _ in done) / sum(u for _, u in done)
        for s in self.stages.values():
            left = self._live(s) if s.kind == kind and s.units and s.fraction < 1.0 else None
            if left is not None:
                return (self.clock() - s.base_time + left) / ((1 - s.base) * s.units)
        return None

    def remaining(self) -> tuple[float | None, bool]:
        """(seconds left or None when some stage cannot be estimated yet, whether any part is projected
        across kinds)."""
        total, projected = 0.0, False
        for name, s in self.stages.items():
            if s.fraction >= 1.0 or s.kind == "other":
                continue
            live = self._live(s)
            if live is not None:
                total += live
                continue
            if s.units is None:
                return None, projected
            rate = self._rate(s.kind)
            if rate is None:
                other = "eval" if s.kind == "tune" else "tune"
                rate, projected = self._rate(other), True
            if rate is None:
                return None, projected
            total += min(s.units * rate, self.caps.get(name, float("inf")))
        return total, projected

    def line(self) -> str:
        elapsed = (self.clock() - self.t0) / 60
        left, projected = self.remaining()
        if left is None:
            return f"run: {elapsed:.1f} min so far; time left is estimated once a stage has been timed"
        return f"run: {elapsed:.1f} min so far, {'~' if projected else ''}{left / 60:.1f} min left"


def size_run(tuning, evaluation, model: str, say) -> RunEta:
    """A run's estimate sized before it starts: `tuning` (a TuneConfig) by its planned training tokens,
    `evaluation` (an EvalConfig, None when no evaluation is pending) by its prompt tokens, counted with the
    base model's tokenizer; `say` is told why an evaluation could not be sized."""
    packed = tuning.packing and tuning.max_steps > 0
    train_tokens = tuning.max_steps * tuning.batch_size * tuning.sequence_length if packed else None
    eval_tokens = None
    if evaluation is not None and not evaluation.server:
        from .models import load_tokenizer
        from .planning import TokenCounter, plan_tokens

        try:
            eval_tokens = plan_tokens(evaluation, TokenCounter(load_tokenizer(model)))
        except Exception as e:  # the estimate is a convenience: the stage itself reports the real problem
            say(f"  (no time estimate for the evaluations: {e})")
    sizes = {"mixture": ("other", None), "tune": ("tune", train_tokens and TRAIN_UNITS_PER_TOKEN * train_tokens),
             "eval_base": ("eval", eval_tokens), "eval_tuned": ("eval", eval_tokens), "report": ("other", None)}  # fmt: skip
    caps = {"tune": tuning.time_limit_minutes * 60} if tuning.time_limit_minutes else {}
    return RunEta(sizes, caps)
