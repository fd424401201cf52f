"""The pre-declared GPU study (docs/study/gpu/README.md), one driver: symbol tuning and its two controls at
log-spaced token budgets, each checkpoint and the base model on the 11 held-out tasks in all five settings.

    python scripts/gpu_study.py --budget-s 540 --data-dir DATA --out $OUT --device cuda
    python scripts/gpu_study.py --smoke --model TINY_DIR --data-dir tests/fixtures/data --out /tmp/r --device cpu

A GPU-time budget in, results out, whatever happens in between:

1. three mixtures from the same queries (`symtune.mixture.build_mixture`): the paper's recipe (symbol prompts, no
   instructions), control natural (`labels: natural`), control inconsistent (`labels: random`); decontaminated;
2. an evaluation pilot (the base model at 1, 2 and 4 queries per task; the last two fit seconds = overhead + items / rate) and a
   tuning warm-up (a few steps of the symbol recipe: tokens per second and per step, load and save times);
3. a plan: the largest symbol budget L (controls at `control_share` x L) whose tuning, plus the evaluations
   that must follow it, fits in the budget; checkpoints at the declared budgets below L and at L;
4. tuning (`symtune.tune`, one run per recipe, a callback saving at the budget steps and stopping at the
   recipe's deadline) while a pool of processes evaluates (`symtune.evaluate`, one task per unit) whatever
   checkpoint is ready, most important first: base, symbol at L, controls at Lc, symbol at Lc, then the curve;
5. after each finished model, the results folder is rewritten (<= 8 files): summary.json (per model and setting
   accuracy, Δ vs base with paired intervals, MDE and tokens: `symtune.report.paired.icl_delta`),
   samples-<recipe>.jsonl.gz, train-logs.jsonl.gz. A killed run leaves the last complete write; a rerun with
   the same --work resumes (finished stages skipped, tuning from its checkpoint, evaluation from its cache).

Why scripts/ and not bench/: bench/ holds benchmarks of symtune against other tools; this runs a study.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECIPES = ("symbol", "natural", "random")  # each recipe is named by its MixtureConfig.labels
DECLARED_BUDGETS = (300_000, 1_000_000, 3_000_000, 10_000_000, 20_000_000)
METRICS = ("gen_acc", "acc")  # gen_acc first: the declared primary metric
RESULT_FILES = 8


@dataclass
class StudyArgs:
    budget_s: float = 540.0
    model: str = "smollm2-135m"
    data_dir: str | None = None
    out: str = "runs/gpu-study/results"
    work: str | None = None  # checkpoints, mixtures, evaluation caches (default: <out>/../work)
    device: str = "cuda"
    queries: int = 100
    trials: int = 2
    budgets: list[int] = field(default_factory=lambda: list(DECLARED_BUDGETS))
    control_share: float = 0.5  # control tokens / symbol tokens at the largest budget
    max_per_task: int = 3000
    eval_procs: int = 12  # one per held-out task and a spare: the 135M model is host bound (docs/benchmarks.md)
    tasks: list[str] | None = None  # evaluation tasks (default: the 11 held-out ones)
    mixture_tasks: list[str] | None = None
    max_tokens: int | None = None  # cap on the symbol recipe's largest budget
    reserve_s: float = 20.0  # kept back for the last writes
    smoke: bool = False


def smoke_overrides(a: StudyArgs) -> StudyArgs:
    """Tiny sizes that run on a CPU in seconds (the test's, and `--smoke`)."""
    a.queries, a.trials, a.max_per_task, a.eval_procs = min(a.queries, 4), 1, 6, min(a.eval_procs, 2)
    a.tasks = a.tasks or ["rte", "sst2"]
    a.mixture_tasks = a.mixture_tasks or ["ag_news", "trec"]
    if a.budgets == list(DECLARED_BUDGETS):
        a.budgets = [1_000, 2_000]
    a.max_tokens = a.max_tokens or 2_000
    a.reserve_s = min(a.reserve_s, 2.0)
    return a


def tiny_model(dest: Path) -> str:
    """A seeded, randomly initialised 2-layer Llama with the SmolLM2 tokenizer (what --smoke tunes when no --model
    is given; the tests' fixture is the same)."""
    if (dest / "config.json").is_file():
        return str(dest)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from symtune.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("smollm2-135m"))
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


def tune_options(a: StudyArgs) -> dict:
    """The `paper` preset scaled to one GPU (batch 32 x 2560 tokens, Adafactor 3e-3 constant), or tiny on --smoke."""
    common = {"save_steps": 0, "save_total_limit": 50, "keep_checkpoints": True, "logging_steps": 1, "seed": 0}
    if a.smoke:
        return {"preset": "cpu-small", **common, "batch_size": 2, "micro_batch_size": 1, "pack_length": 512,
                "max_input_tokens": 490, "max_target_tokens": 16, "warmup_steps": 0, "precision": "fp32",
                "time_limit_minutes": 0}
    return {"preset": "paper", **common, "micro_batch_size": 8, "gradient_checkpointing": False,
            "precision": "bf16-mixed" if a.device.startswith("cuda") else "auto", "time_limit_minutes": 0}


def mixture_config(a: StudyArgs, labels: str):
    from symtune.mixture import MixtureConfig

    # the budget is counted by the study model's own tokenizer (on the GPU machine the GGUF path: no alias there)
    extra = {"k_max": 2, "tokenizer": None, "max_tokens": None} if a.smoke else {"tokenizer": a.model}
    return MixtureConfig(data_dir=a.data_dir, tasks=a.mixture_tasks, max_per_task=a.max_per_task, labels=labels,
                         seed=0, **extra)


def eval_config(a: StudyArgs, model: str, task: str, out: Path, limit: int | None = None):
    from symtune.evaluate import EvalConfig

    return EvalConfig(model=model, out=str(out), data_dir=a.data_dir, suite="icl", tasks=[task],
                      max_queries=a.queries, limit=limit, trials=a.trials, seed=0, dtype="float32",
                      device=a.device, max_new_tokens=2 if a.smoke else 8)


# ---- the evaluation pool: one task of one model per unit, each worker keeps its last model loaded -------------

_BACKEND: dict = {}


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _wait(futures, t0: float) -> float:
    cf.wait(futures)
    return time.time() - t0


def eval_unit(config) -> dict:
    """Evaluate one (model, task) unit in a pool worker; returns its seconds and items."""
    from symtune.evaluate import evaluate, make_backend

    t0 = time.time()
    key = (config.model, config.device, config.dtype)
    if _BACKEND.get("key") != key:
        _BACKEND.clear()
        _BACKEND.update(key=key, backend=make_backend(config))
    results = evaluate(config, backend=_BACKEND["backend"], progress=False)
    return {"seconds": time.time() - t0, "items": results.timing.queries}


@dataclass
class Unit:
    model: str  # key: base, symbol@<tokens>, ...
    path: str
    task: str
    priority: int
    mandatory: bool
    done: bool = False
    skipped: str | None = None


def targets(models: dict, versus: dict, metric: str = METRICS[0]) -> dict:
    """The declared targets (docs/study/gpu/README.md), judged at the largest evaluated symbol budget on the
    primary metric: None where a number is missing."""
    sym = [k for k, v in models.items() if v.get("recipe") == "symbol" and "delta_vs_base" in v]
    if not sym:
        return {}
    top = max(sym, key=lambda k: models[k]["tokens"])

    def d(setting: str) -> dict | None:
        return (models[top]["delta_vs_base"].get(setting) or {}).get(metric)

    def at_least(setting: str, points: float, above_zero: bool) -> bool | None:
        x = d(setting)
        if x is None:
            return None
        return x["delta"] * 100 >= points and (not above_zero or x["ci95"][0] > 0)

    beats = [(v.get(st) or {}).get(metric) for v in versus.values() for st in ("symbol", "flipped")]
    return {"model": top, "tokens": models[top]["tokens"], "metric": metric,
            "symbol >= +5, interval above 0": at_least("symbol", 5, True),
            "flipped >= +10, interval above 0": at_least("flipped", 10, True),
            "natural+instr >= -3": at_least("natural+instr", -3, False),
            "natural >= -3": at_least("natural", -3, False),
            "symbol-tuned above both controls on symbol and flipped (same tokens)":
                None if len(beats) < 4 or None in beats else all(b["delta"] > 0 for b in beats)}


class Study:
    def __init__(self, a: StudyArgs):
        self.a = a
        self.t0 = time.time()
        self.deadline = self.t0 + a.budget_s
        self.out = Path(a.out)
        self.work = Path(a.work or self.out.parent / (self.out.name + "-work"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_path = self.work / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.units: list[Unit] = []
        self.inflight: dict = {}
        self.unit_seconds: list[float] = []
        self.last_write = 0.0
        self.log_lines: list[str] = []
        self.pool = None

    # -- bookkeeping --
    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.log_lines.append(line)
        with (self.work / "driver.log").open("a") as f:
            f.write(line + "\n")

    def save_state(self) -> None:
        from symtune.files import write_atomic

        write_atomic(self.state_path, json.dumps(self.state, indent=1))

    def left(self) -> float:
        return self.deadline - time.time()

    # -- stages --
    def mixtures(self) -> None:
        from symtune.mixture import build_mixture

        t = time.time()
        todo = {r: self.work / "mixtures" / r for r in RECIPES if not (self.work / "mixtures" / r / "manifest.json").is_file()}
        if not todo:
            self.log("mixtures: done earlier, skipped")
            return
        futures = {r: self.pool.submit(build_mixture, mixture_config(self.a, r), str(d), overwrite=True,
                                       progress=False) for r, d in todo.items()}  # fmt: skip
        for r, f in futures.items():
            f.result()
            self.log(f"mixture {r}: built")
        self.state["mixtures_s"] = time.time() - t
        self.save_state()

    def eval_tasks(self) -> list[str]:
        from symtune.tasks import load_catalogue, select_tasks

        if self.a.tasks:
            return list(self.a.tasks)
        specs = select_tasks(load_catalogue(self.a.data_dir), None, role="eval", data_dir=self.a.data_dir)
        return [s.name for s in specs]

    def unit_dir(self, model: str, task: str) -> Path:
        return self.work / "evals" / model.replace("@", "-") / task

    def pilot(self, tasks: list[str]) -> None:
        """Base model at 1, 2 and 4 queries per task (each reuses the one before's cache); the last two fit overhead and rate."""
        if "pilot" in self.state:
            return
        points, done = [], 0
        for limit in (1, 2, 4):  # the first also starts the workers and loads the model: not used in the fit
            t = time.time()
            futs = [self.pool.submit(eval_unit, eval_config(self.a, self.a.model, task, self.unit_dir("base", task),
                                                            limit=limit)) for task in tasks]  # fmt: skip
            seconds, items = _wait(futs, t), sum(f.result()["items"] for f in futs)
            points.append((seconds, items - done))
            done = items
        (t1, n1), (t2, n2) = points[1:]
        # seconds = overhead + new items / rate (each run computes only what the one before did not)
        if n2 > n1 and t2 > t1:
            rate = (n2 - n1) / (t2 - t1)
            overhead = max(t1 - n1 / rate, 0.0)
        else:  # noise: count everything as work (a slower, safe estimate)
            rate, overhead = (n1 + n2) / max(t1 + t2, 1e-3), 0.0
        full = done / 4 * self.a.queries
        self.state["pilot"] = {"points": points, "items_per_s": rate, "overhead_s": overhead, "items_full": full,
                               "model_eval_s": overhead + full / rate, "workers": self.a.eval_procs}
        self.save_state()
        self.log(f"eval pilot: {rate:.1f} items/s over {self.a.eval_procs} workers, overhead {overhead:.1f}s; "
                 f"one model ~{full:.0f} items ~{overhead + full / rate:.0f}s")

    def warmup(self) -> None:
        """A few tuning steps of the symbol recipe: tokens/s, tokens/step, tune() overhead, checkpoint save time."""
        if "warmup" in self.state:
            return
        from symtune.report.runs import read_jsonl
        from symtune.tune import tune

        opts = tune_options(self.a)
        steps = 3 if self.a.smoke else 6
        records = 16 if self.a.smoke else 2000
        save = SaveAt({steps}, deadline=None)
        d = self.work / "warmup"
        t = time.time()
        summary = tune(self.a.model, str(self.work / "mixtures" / "symbol"), str(d), overwrite=True, **opts,
                       max_steps=steps, max_examples=records, callbacks=[save])
        wall = time.time() - t
        res = summary["results"]
        entries = read_jsonl(d / "train_log.jsonl")
        steady = [e["tokens_per_s"] for e in entries if "tokens_per_s" in e and e["step"] > 1]
        tps = statistics.median(steady) if steady else res["tokens_per_s"]
        tok_s = self._tokenize_seconds_per_record()
        self.state["warmup"] = {
            "tokens_per_s": tps, "tokens_per_step": res["tokens"] / max(res["steps"], 1),
            "tokens_per_record": summary["data"]["tokens"] / max(summary["data"]["examples"], 1),
            "overhead_s": max(wall - res["train_seconds"] - tok_s * records, 0.0), "tokenize_s_per_record": tok_s,
            "save_s": statistics.mean(save.save_seconds) if save.save_seconds else 0.0, "wall_s": wall,
            "device": summary["device"], "precision": summary["precision"], "packing": summary["packing"]["mode"]}
        self.save_state()
        shutil.rmtree(d, ignore_errors=True)
        self.log(f"tuning warm-up: {tps:,.0f} tokens/s, {self.state['warmup']['tokens_per_step']:,.0f} tokens/step")

    def _tokenize_seconds_per_record(self) -> float:
        from symtune.mixture import load_mixture
        from symtune.models import load_tokenizer, resolve_model
        from symtune.tune.data import tokenize_records

        dataset, _ = load_mixture(self.work / "mixtures" / "symbol")
        tok = load_tokenizer(resolve_model(self.a.model))
        n = min(len(dataset), 200)
        t = time.time()
        tokenize_records(dataset, tok, 2048, 512, max_examples=n)
        return (time.time() - t) / n

    def plan(self, tasks: list[str]) -> dict:
        if "plan" in self.state:
            return self.state["plan"]
        if "warmup" not in self.state:
            plan = {"symbol_tokens": 0, "control_tokens": 0, "checkpoints": {r: [] for r in RECIPES}, "tune_s": {},
                    "note": "the budget was spent before the tuning warm-up: no tuning, the base model only"}
            self.state["plan"] = plan
            self.save_state()
            self.log(plan["note"])
            return plan
        w, a = self.state["warmup"], self.a
        unit_s = self.unit_estimate()
        rounds = math.ceil(len(tasks) / max(a.eval_procs, 1))
        # What must follow the tuning: the last recipe's last checkpoint (x1.5: the GPU is shared while tuning,
        # and a backlog may remain). The other required models (base, symbol at L and at Lc, the first control)
        # are evaluated while the later recipes tune; they must fit in the whole time left.
        tail = rounds * unit_s * 1.5
        required_s = 5 * rounds * unit_s * 1.2
        avail = self.left() - a.reserve_s - tail

        def tune_s(tokens: float) -> float:
            records = tokens / w["tokens_per_record"]
            saves = len([b for b in a.budgets if b < tokens]) + 1
            return (w["overhead_s"] + records * w["tokenize_s_per_record"] + tokens / w["tokens_per_s"]
                    + saves * w["save_s"])

        def total(L: float) -> float:
            return tune_s(L) + 2 * tune_s(L * a.control_share)

        lo, hi = 0.0, w["tokens_per_s"] * max(avail, 0.0)
        for _ in range(60):  # largest L with total(L) <= avail
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if total(mid) <= avail else (lo, mid)
        L = int(min(lo, a.max_tokens or lo))
        plan = {"available_s": avail, "eval_tail_s": tail, "required_eval_s": required_s, "unit_eval_s": unit_s,
                "symbol_tokens": 0,
                "control_tokens": 0, "checkpoints": {r: [] for r in RECIPES}, "tune_s": {}}
        if L < min(a.budgets):
            plan["note"] = (f"the budget leaves {avail:.0f}s for tuning after the evaluations, less than the smallest "
                            f"budget ({min(a.budgets):,} tokens) needs: no tuning, the base model only")
        else:
            Lc = int(L * a.control_share)
            per_step = w["tokens_per_step"]
            for r, top in (("symbol", L), ("natural", Lc), ("random", Lc)):
                budgets = sorted({b for b in a.budgets if b < top} | {top} | ({Lc} if r == "symbol" else set()))
                steps = sorted({max(1, round(b / per_step)) for b in budgets})
                plan["checkpoints"][r] = steps
                plan["tune_s"][r] = tune_s(top)
            plan.update(symbol_tokens=L, control_tokens=Lc)
            if required_s > avail + tail:
                plan["note"] = (f"the required evaluations (~{required_s:.0f}s) may not all fit in the {avail + tail:.0f}s "
                                "left: they run by priority (base, symbol at L, controls, symbol at Lc)")
        self.state["plan"] = plan
        self.save_state()
        self.log(f"plan: symbol to {plan['symbol_tokens']:,} tokens, controls to {plan['control_tokens']:,}; "
                 f"checkpoints (steps) {plan['checkpoints']}; evaluation tail {tail:.0f}s")
        return plan

    # -- evaluation units --
    def add_units(self, model: str, path: str, tasks: list[str], priority: int, mandatory: bool) -> None:
        for t in tasks:
            u = Unit(model, path, t, priority, mandatory)
            u.done = self._unit_done(u)
            self.units.append(u)

    def _unit_done(self, u: Unit) -> bool:
        from symtune.results import EvalResults

        f = self.unit_dir(u.model, u.task) / "results.json"
        if not f.is_file():
            return False
        r = EvalResults.load(f)
        return bool(r.complete) and r.config.get("limit") is None

    def unit_estimate(self) -> float:
        if self.unit_seconds:
            return statistics.median(self.unit_seconds)
        p = self.state.get("pilot")
        return p["model_eval_s"] / math.ceil(len({u.task for u in self.units}) / max(self.a.eval_procs, 1)) if p else 0.0

    def pump(self, final: bool = False) -> None:
        """Collect finished units, write results when a model completes, submit the next units that fit."""
        finished = False
        for f in [f for f in self.inflight if f.done()]:
            u = self.inflight.pop(f)
            got = f.result()
            u.done = True
            self.unit_seconds.append(got["seconds"])
            finished = finished or all(x.done for x in self.units if x.model == u.model)
        if finished or (self.inflight and time.time() - self.last_write > 60):
            self.write_results("running")
        est = self.unit_estimate()
        waiting = sorted((u for u in self.units if not u.done and u.skipped is None and u not in
                          self.inflight.values()), key=lambda u: u.priority)  # fmt: skip
        for u in waiting:
            if len(self.inflight) >= max(self.a.eval_procs, 1):
                break
            left = self.left() - self.a.reserve_s
            must = [x for x in self.units if x.mandatory and not x.done and x not in self.inflight.values()]
            tail = math.ceil(len(must) / max(self.a.eval_procs, 1)) * est
            if u.model != "base" and (est > left or (not u.mandatory and est + tail > left)):  # base: always
                if final:
                    u.skipped = "no time left"
                continue
            cfg = eval_config(self.a, u.path, u.task, self.unit_dir(u.model, u.task))
            self.inflight[self.pool.submit(eval_unit, cfg)] = u

    # -- tuning --
    def tune_recipe(self, recipe: str, steps: list[int], tasks: list[str], order: int, plan: dict) -> None:
        from symtune.tune import tune
        from symtune.tune.trainer import COMPLETE_MARKER, token_counts_at

        d = self.work / "tune" / recipe
        ckpt = d / "checkpoints"
        Lc = plan["control_tokens"]
        lc_step = max(1, round(Lc / self.state["warmup"]["tokens_per_step"]))

        def register(step: int, path: Path, last: bool) -> None:
            tokens = token_counts_at(path)[0]
            key = f"{recipe}@{step}"
            if any(u.model == key for u in self.units):
                return
            top = last  # the run's last checkpoint: steps[-1], or where its deadline stopped it
            mandatory = top or (recipe == "symbol" and step == lc_step)
            priority = (1 if recipe == "symbol" else 2) if top else 3 if mandatory else 10 + order * 100 - step / 1e6
            self.add_units(key, str(path), tasks, priority, mandatory)
            self.state.setdefault("models", {})[key] = {"recipe": recipe, "step": step, "tokens": tokens,
                                                         "path": str(path)}
            self.save_state()
            self.log(f"checkpoint {key}: {tokens:,} tokens")
            self.pump()

        if (d / "tune_summary.json").is_file():
            self.log(f"tune {recipe}: done earlier, skipped")
        else:
            w = self.state["warmup"]
            records = int(math.ceil(steps[-1] * w["tokens_per_step"] / w["tokens_per_record"] * 1.05)) + 1
            # the recipe's own share of the time left, so a slow start cannot eat the evaluations' time
            share = plan["tune_s"][recipe] / sum(plan["tune_s"][r] for r in RECIPES if r in self._tune_todo)
            stop_at = time.time() + share * max(self.left() - self.a.reserve_s - plan["eval_tail_s"], 0)
            save = SaveAt(set(steps), deadline=stop_at, on_step=self.pump,
                          on_saved=lambda step, last: register(step, ckpt / f"checkpoint-{step}", last))  # fmt: skip
            resume = (d / "tune_config.yaml").is_file()
            self.log(f"tune {recipe}: {steps[-1]} steps, checkpoints at {steps}" + (" (resuming)" if resume else ""))
            tune(self.a.model, str(self.work / "mixtures" / recipe), str(d), resume=resume, overwrite=not resume,
                 **tune_options(self.a), max_steps=steps[-1], max_examples=records, callbacks=[save])
        self._tune_todo.discard(recipe)
        _free_memory()
        done = sorted((int(c.name.split("-")[1]), c) for c in ckpt.glob("checkpoint-*") if (c / COMPLETE_MARKER).is_file())
        for i, (step, c) in enumerate(done):  # after a resume: what the callback did not see
            register(step, c, last=i == len(done) - 1)

    # -- results --
    def write_results(self, status: str) -> None:
        from symtune.files import gzip_in_place, write_atomic
        from symtune.metrics import summarize
        from symtune.report.paired import icl_delta
        from symtune.report.runs import read_jsonl

        self.last_write = time.time()
        from symtune.results import EvalResults

        samples: dict[str, list[dict]] = {}
        tasks_done: dict[str, list[str]] = {}
        chance: dict[str, float] = {}
        for u in self.units:
            if u.done:
                d = self.unit_dir(u.model, u.task)
                chance[u.task] = 1 / EvalResults.load(d / "results.json").data[u.task].labels
                rows = read_jsonl(d / "samples.jsonl")
                samples.setdefault(u.model, []).extend(rows)
                tasks_done.setdefault(u.model, []).append(u.task)
        models = {}
        base = samples.get("base", [])
        settings = sorted({s["setting"] for rows in samples.values() for s in rows})
        for key, rows in samples.items():
            info = dict(self.state.get("models", {}).get(key, {"recipe": "base", "tokens": 0}))
            info["tasks"] = sorted(tasks_done[key])
            summ = summarize(rows, chance, seed=0).summary
            info["accuracy"] = {s: summ[s].to_dict() for s in sorted(summ)}
            if key != "base" and base:
                info["delta_vs_base"] = {s: {m: icl_delta([b for b in base if b["setting"] == s],
                                                          [t for t in rows if t["setting"] == s], m)
                                             for m in METRICS} for s in settings}  # fmt: skip
            models[key] = info
        versus = {}
        plan = self.state.get("plan", {})
        lc = plan.get("control_tokens")
        sym = [k for k, v in models.items() if v.get("recipe") == "symbol"]
        for ctrl in ("natural", "random"):
            top = [k for k, v in models.items() if v.get("recipe") == ctrl]
            if not top or not sym:
                continue
            c = max(top, key=lambda k: models[k]["tokens"])
            s = min(sym, key=lambda k: abs(models[k]["tokens"] - models[c]["tokens"]))  # same tokens (Lc)
            versus[f"{s} vs {c}"] = {st: {m: icl_delta([x for x in samples[c] if x["setting"] == st],
                                                       [x for x in samples[s] if x["setting"] == st], m)
                                          for m in METRICS} for st in settings}  # fmt: skip
        summary = {
            "schema": 1, "status": status, "elapsed_s": time.time() - self.t0, "args": asdict(self.a),
            "declared": "docs/study/gpu/README.md", "primary_metric": METRICS[0], "gpu": _gpu_name(),
            "measured": {k: self.state.get(k) for k in ("mixtures_s", "pilot", "warmup")}, "plan": plan,
            "control_tokens": lc, "models": models, "symbol_vs_controls": versus,
            "targets": targets(models, versus),
            "not_evaluated": sorted({f"{u.model}: {u.skipped}" for u in self.units if u.skipped}),
        }
        write_atomic(self.out / "summary.json", json.dumps(summary, indent=1, default=float))
        groups: dict[str, list[dict]] = {}
        for key, rows in samples.items():
            recipe = models[key]["recipe"]
            groups.setdefault(recipe, []).extend({"model": key, "tokens": models[key]["tokens"], **r} for r in rows)
        logs = []
        for r in RECIPES:
            f = self.work / "tune" / r / "train_log.jsonl"
            if f.is_file():
                logs += [{"recipe": r, **e} for e in read_jsonl(f)]
        if logs:
            groups["train-logs"] = logs
        tmp = self.work / "gz"
        tmp.mkdir(exist_ok=True)
        for name, rows in groups.items():
            plain = tmp / (f"{name}.jsonl" if name == "train-logs" else f"samples-{name}.jsonl")
            write_atomic(plain, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            gzip_in_place(plain).replace(self.out / (plain.name + ".gz"))
        write_atomic(self.out / "log.txt", "\n".join(self.log_lines[-2000:]) + "\n")

    # -- the whole run --
    def run(self) -> dict:
        if self.a.smoke and self.a.model == StudyArgs.model:
            self.a.model = tiny_model(self.work / "tiny-model")
        ctx = multiprocessing.get_context("spawn")
        procs = max(self.a.eval_procs, 1)
        threads = max(1, (os.cpu_count() or 2) // (procs + 1))
        self.pool = cf.ProcessPoolExecutor(procs, mp_context=ctx, initializer=_worker_init, initargs=(threads,))
        status = "complete"
        try:
            self.mixtures()
            tasks = self.eval_tasks()
            self.pilot(tasks)
            self.add_units("base", self.a.model, tasks, 0, True)
            self.pump()  # the base model's evaluation runs while the warm-up tunes
            if self.left() > self.a.reserve_s or "warmup" in self.state:
                self.warmup()
            plan = self.plan(tasks)
            self._tune_todo = {r for r in RECIPES if plan["checkpoints"][r]}
            for order, r in enumerate(RECIPES):
                if plan["checkpoints"][r]:
                    self.tune_recipe(r, plan["checkpoints"][r], tasks, order, plan)
            while True:
                self.pump(final=True)
                pending = [u for u in self.units if not u.done and u.skipped is None]
                if not pending:
                    break
                if self.left() < self.a.reserve_s and not any(u.model == "base" for u in pending):
                    status = "stopped at the deadline"  # the base model is always finished: it is the baseline
                    for u in pending:
                        u.skipped = "stopped at the deadline"
                    break
                time.sleep(0.2)
        finally:
            for p in list(getattr(self.pool, "_processes", {}).values()):  # no public way to stop running work
                p.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.log(f"results in {self.out} ({status}, {time.time() - self.t0:.0f}s of {self.a.budget_s:.0f}s)")
            self.write_results(status)  # after the log line, so log.txt has it
        return json.loads((self.out / "summary.json").read_text())


def _save_at_class():
    from transformers import TrainerCallback

    class SaveAt(TrainerCallback):
        """Save a checkpoint at the given steps, and stop (saving) at an absolute deadline."""

        def __init__(self, steps: set[int], deadline: float | None, on_saved=None, on_step=None):
            self.steps, self.deadline, self.on_saved, self.on_step = steps, deadline, on_saved, on_step
            self.save_seconds: list[float] = []
            self._asked = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.deadline is not None and time.time() > self.deadline and state.global_step < state.max_steps:
                control.should_training_stop = True
            if state.global_step in self.steps or control.should_training_stop or state.global_step >= state.max_steps:
                control.should_save = True
                self._asked = time.time()
            if self.on_step:
                self.on_step()

        def on_save(self, args, state, control, **kwargs):
            if self._asked is not None:
                self.save_seconds.append(time.time() - self._asked)
                self._asked = None
            if self.on_saved:
                self.on_saved(state.global_step, control.should_training_stop or state.global_step >= state.max_steps)

    return SaveAt


def SaveAt(*args, **kwargs):  # noqa: N802 (a class built on first use: transformers is imported lazily)
    return _save_at_class()(*args, **kwargs)


def parse_args(argv: list[str] | None = None) -> StudyArgs:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock seconds for everything, writes included")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/gpu-study/results", help="results folder (<= 8 files)")
    p.add_argument("--work", default=None, help="checkpoints, mixtures, caches (default: <out>-work)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--queries", type=int, default=100, help="queries per task")
    p.add_argument("--trials", type=int, default=2, help="exemplar draws per query")
    p.add_argument("--budgets", type=float, nargs="+", default=None, help="declared token budgets (e.g. 3e5 1e6)")
    p.add_argument("--max-tokens", type=float, default=None, help="cap on the symbol recipe's largest budget")
    p.add_argument("--control-share", type=float, default=0.5, help="control tokens / symbol tokens")
    p.add_argument("--max-per-task", type=int, default=3000, help="mixture prompts per tuning task")
    p.add_argument("--eval-procs", type=int, default=None, help="evaluation processes (default: 12 on cuda, 1 on cpu)")
    p.add_argument("--tasks", nargs="+", default=None, help="evaluation tasks (default: the 11 held-out)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: runs on a CPU in seconds (pass a tiny --model)")
    n = p.parse_args(argv)
    a = StudyArgs(budget_s=n.budget_s, model=n.model, data_dir=n.data_dir, out=n.out, work=n.work, device=n.device,
                  queries=n.queries, trials=n.trials, control_share=n.control_share, max_tokens=int(n.max_tokens) if n.max_tokens else None, max_per_task=n.max_per_task,
                  eval_procs=n.eval_procs or (12 if n.device == "cuda" else 1), tasks=n.tasks, smoke=n.smoke)
    if n.budgets:
        a.budgets = sorted(int(b) for b in n.budgets)
    return smoke_overrides(a) if a.smoke else a


def main(argv: list[str] | None = None) -> int:
    summary = Study(parse_args(argv)).run()
    print(json.dumps({k: summary[k] for k in ("status", "elapsed_s", "control_tokens")}, default=float))
    return 0


if __name__ == "__main__":
    # Run as the module `gpu_study` so that the pool's spawned workers can import eval_unit by name.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_study

    sys.exit(gpu_study.main())
