"""symtune's candidate scoring vs lm-evaluation-harness, side by side on the same strings.

The same (prompt, candidates) requests, rendered from the paper's held-out tasks in every setting
(natural labels and held-out symbols, with and without instruction, flipped labels on binary tasks;
4 exemplars per class, `Input: / Output:`), go through symtune's `HFBackend` and through
lm-eval 0.4.x's `HFLM.loglikelihood` (hf backend, `gguf_file=` for the default model, batch size 8).

Prints throughput (requests/s) of both and their ratio, the largest |Δ log-likelihood|, prediction
agreement (rank classification on the summed log-prob), the bf16 figures beside fp32, and achieved
FLOP/s against a matmul peak measured in the same run.

With `--generate N`, each request is what `symtune eval` asks of every query: the candidates' log-likelihoods
AND a greedy answer of up to N tokens (stop at a newline). symtune does both from one forward pass
(`score_and_generate`); lm-eval needs its `loglikelihood` requests plus a `generate_until` request per
prompt, as a user of the harness would run them. Greedy answers are compared too.

    python bench/eval_vs_lm_eval.py --data-dir ../shared/data --n 60
    python bench/eval_vs_lm_eval.py --data-dir ../shared/data --n 60 --generate 6
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
from tune_vs_trl import machine_kind, matmul_peak  # bench/ is on the path when a bench runs as a script

from symtune.episodes import (
    EVAL_SETTINGS,
    draw_episode,
    draw_shared_episodes,
    prepare_task,
    query_order,
    render,
)
from symtune.models import load_model, model_identity, resolve_model
from symtune.scoring import HFBackend
from symtune.scoring.packing import trie_tokens
from symtune.symbols import SymbolPool
from symtune.tasks import load_catalogue, select_tasks

REPO = Path(__file__).resolve().parents[1]


def build_requests(data_dir: Path, n: int, seed: int = 0, exemplars: str = "per-query",
                   per_combo: int = 20) -> list[tuple[str, list[str], str]]:
    """n (prompt, candidates, gold) triples from the held-out tasks in every setting (flipped: binary only).
    per-query: round-robin over (task, setting), each prompt its own exemplar draw (the paper's protocol).
    shared: `per_combo` queries of one (task, setting) after another, all of them with the same exemplars,
    as `symtune eval --exemplars shared` asks them."""
    cat = load_catalogue(data_dir)
    specs = [s for s in select_tasks(cat, role="eval", data_dir=data_dir)]
    tasks = {s.name: prepare_task(s, data_dir) for s in specs}
    pool = SymbolPool(split="heldout")
    combos = [(t, st) for st in EVAL_SETTINGS for t in tasks if st != "flipped" or tasks[t].spec.binary]
    out, i = [], 0
    while len(out) < n:
        if exemplars == "shared":
            name, setting = combos[i % len(combos)]
            task = tasks[name]
            eps = draw_shared_episodes(task, per_combo, seed=seed, setting=setting, k=4, pool=pool)
        else:
            name, setting = combos[i % len(combos)]
            task = tasks[name]
            q = query_order(task, seed)[i // len(combos)]
            eps = [draw_episode(task, q, seed=seed, setting=setting, k=4, pool=pool)]
        for ep in eps[:n - len(out)]:
            prompt, completion = render(task, ep)
            out.append((prompt, [" " + ep.mapping[label] for label in task.spec.labels], completion))
        i += 1
    return out


def body_params(model) -> int:
    """Parameters that every token passes through as matmuls: all but the embedding table / LM head."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    skip = {emb.data_ptr(), head.data_ptr()}
    return sum(p.numel() for p in model.parameters() if p.data_ptr() not in skip)


class LmEvalRunner:
    """lm-eval's HFLM on the same model file, scoring (prompt, candidate) pairs as loglikelihood Instances."""

    def __init__(self, ref, dtype: str, batch_size: int = 8):
        from lm_eval.models.huggingface import HFLM

        kw = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
        self.lm = HFLM(pretrained=ref.path, batch_size=batch_size, device="cpu", dtype=dtype, **kw)

    def __call__(self, reqs: list[tuple[str, list[str]]]) -> list[list[float]]:
        from lm_eval.api.instance import Instance

        flat = [(p, c) for p, cands in reqs for c in cands]
        inst = [Instance(request_type="loglikelihood", doc={}, arguments=a, idx=i) for i, a in enumerate(flat)]
        res = self.lm.loglikelihood(inst, disable_tqdm=True)
        out, i = [], 0
        for _, cands in reqs:
            out.append([ll for ll, _ in res[i:i + len(cands)]])
            i += len(cands)
        return out

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        from lm_eval.api.instance import Instance

        args = {"until": ["\n"], "max_gen_toks": max_new_tokens, "do_sample": False}
        inst = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(args)), idx=i)
                for i, p in enumerate(prompts)]
        return self.lm.generate_until(inst, disable_tqdm=True)

    def tokens_fed(self, reqs) -> int:
        """Tokens lm-eval runs through the model: context+continuation-1 per pair, except that one-token
        continuations of the same context share one forward (its `group_by="contexts"`)."""
        seen, tokens = set(), 0
        for p, cands in reqs:
            ctx = self.lm.tok_encode(p)
            for c in cands:
                whole = self.lm.tok_encode(p + c)
                key = tuple(whole[:-1])
                if len(whole) - len(ctx) == 1 and key in seen:
                    continue
                seen.add(key)
                tokens += len(whole) - 1
        return tokens


def compare(a: list[list[float]], b: list[list[float]], golds: list[str], reqs) -> tuple[float, float, float]:
    """(max |Δ|, prediction agreement, accuracy of a) over requests."""
    d = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    agree = sum(_argmax(ra) == _argmax(rb) for ra, rb in zip(a, b)) / len(a)
    acc = sum(cands[_argmax(ra)] == gold for ra, (_, cands), gold in zip(a, reqs, golds)) / len(a)
    return d, agree, acc


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=60, help="number of (prompt, candidates) requests")
    ap.add_argument("--chunks", type=int, default=6,
                    help="the requests are timed in this many chunks, the runners alternating, so that both see "
                         "the same machine load")
    ap.add_argument("--batch-size", type=int, default=8, help="symtune: prompts per generate() batch (packed scoring sizes its batches in tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--naive", action="store_true", help="also time symtune's naive reference path")
    ap.add_argument("--generate", type=int, default=0, metavar="N",
                    help="also a greedy answer of up to N tokens per request, as `symtune eval` does (0: scoring only)")
    ap.add_argument("--exemplars", default="per-query", choices=["per-query", "shared"],
                    help="the protocol the requests follow (shared: one exemplar set per task and setting)")
    ap.add_argument("--per-combo", type=int, default=20, help="shared: queries per task and setting")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    built = build_requests(args.data_dir, args.n, exemplars=args.exemplars, per_combo=args.per_combo)
    reqs, golds = [(p, c) for p, c, _ in built], [g for _, _, g in built]
    ref = resolve_model(args.model)
    fig: dict = {"model": model_identity(args.model), "n_requests": len(reqs),
                 "n_candidates": sum(len(c) for _, c in reqs), "threads": args.threads, "torch": torch.__version__,
                 "chunks": args.chunks, "generate": args.generate, "exemplars": args.exemplars}
    native, fig["cpu_kind"] = machine_kind("cpu")
    if not native and not args.skip_bf16:  # bf16 emulated: a row nobody would run, and minutes to time it
        print(f"{fig['cpu_kind']}: the bf16 row is skipped (fp32 is what symtune runs here)")
        args.skip_bf16 = True
    dtypes = ("float32",) if args.skip_bf16 else ("float32", "bfloat16")
    fig["matmul_peak_gflops"] = {dt: matmul_peak("cpu", dt, 2048, seconds=1.0) / 1e9 for dt in dtypes}

    model, tok = load_model(args.model, dtype="float32")
    n_body, (n_vocab, n_hidden) = body_params(model), model.get_output_embeddings().weight.shape
    runners = {"symtune_fp32": HFBackend(model, tok, batch_size=args.batch_size)}
    if not args.skip_bf16:
        runners["symtune_bf16"] = HFBackend(*load_model(args.model, dtype="bfloat16"), batch_size=args.batch_size)
    if args.naive:
        runners["symtune_naive_fp32"] = HFBackend(model, tok, naive=True)
    if not args.skip_lm_eval:
        runners["lm_eval_fp32"] = LmEvalRunner(ref, "float32")
    be = runners["symtune_fp32"]
    lens = [be.count_tokens(p) for p, _ in reqs]
    fig["prompt_tokens"] = {"mean": sum(lens) / len(lens), "min": min(lens), "max": max(lens), "sum": sum(lens)}
    # the fewest positions any exact scorer must forward: distinct prefixes of every prompt + candidate
    fig["unique_tokens"] = trie_tokens([be.encode(p + c)[:-1] for p, cs in reqs for c in cs])
    fig["multi_token_candidates"] = sum(be.count_tokens(p + c) - be.count_tokens(p) > 1 for p, cs in reqs for c in cs)

    def call(name, chunk):
        """(log-likelihoods per request, greedy answers or None)."""
        r = runners[name]
        if isinstance(r, HFBackend):
            if args.generate:
                scores, gens = r.score_and_generate(chunk, args.generate, ["\n"])
                return [[s.logprob for s in row] for row in scores], gens
            return [[s.logprob for s in row] for row in r.loglikelihoods(chunk)], None
        gens = r.generate([p for p, _ in chunk], args.generate) if args.generate else None
        return r(chunk), gens

    for name in runners:  # warm-up
        call(name, reqs[:1])
    for r in runners.values():
        if isinstance(r, HFBackend):
            r.stats = dict.fromkeys(r.stats, 0)
    ll = {name: [] for name in runners}
    gen = {name: [] for name in runners}
    secs, cpu = dict.fromkeys(runners, 0.0), dict.fromkeys(runners, 0.0)
    bounds = [round(i * len(reqs) / args.chunks) for i in range(args.chunks + 1)]
    for c in range(args.chunks):
        chunk = reqs[bounds[c]:bounds[c + 1]]
        names = list(runners) if c % 2 == 0 else list(runners)[::-1]
        for name in names:
            t, c0 = time.perf_counter(), time.process_time()
            got_ll, got_gen = call(name, chunk)
            ll[name] += got_ll
            gen[name] += got_gen or []
            secs[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c0
        print(f"chunk {c + 1}/{args.chunks}: " + ", ".join(f"{k} {v:.0f}s" for k, v in secs.items()), flush=True)

    def flops(tokens: int, head_rows: int) -> float:
        return 2 * n_body * tokens + 2 * n_vocab * n_hidden * head_rows

    for name, r in runners.items():
        f = fig[name] = {"seconds": secs[name], "req_per_s": len(reqs) / secs[name], "cpu_seconds": cpu[name]}
        if isinstance(r, HFBackend) and not r.naive:
            st = f["stats"] = dict(r.stats)
            f["gflops_achieved"] = flops(st["forward_tokens"], st["lm_head_rows"]) / secs[name] / 1e9
            f["gflops_useful"] = flops(st["forward_tokens"] - st["padded_tokens"], st["lm_head_rows"]) / secs[name] / 1e9
        if isinstance(r, LmEvalRunner):
            f["tokens_fed"] = r.tokens_fed(reqs)
            f["gflops_achieved"] = flops(f["tokens_fed"], f["tokens_fed"]) / secs[name] / 1e9
        d, agree, acc = compare(ll[name], ll["symtune_fp32"], golds, reqs)
        f.update(max_abs_diff_vs_symtune_fp32=d, agreement_vs_symtune_fp32=agree, accuracy=acc)
        if args.generate:
            f["generation_agreement_vs_symtune_fp32"] = sum(
                a.strip() == b.strip() for a, b in zip(gen[name], gen["symtune_fp32"])) / len(reqs)
    if "lm_eval_fp32" in fig:
        fig["speedup_fp32"] = secs["lm_eval_fp32"] / secs["symtune_fp32"]
        fig["speedup_fp32_cpu_time"] = cpu["lm_eval_fp32"] / cpu["symtune_fp32"]
    fig["predictions_symtune_fp32"] = [cands[_argmax(x)] for x, (_, cands) in zip(ll["symtune_fp32"], reqs)]

    print(report(fig))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    return fig


def report(f: dict) -> str:
    pt = f["prompt_tokens"]
    lines = [f"model {f['model']['name']} ({f['model'].get('gguf_file') or f['model']['path']}); {f['n_requests']} "
             f"requests, {f['n_candidates']} candidates ({f['multi_token_candidates']} multi-token); prompt tokens "
             f"mean {pt['mean']:.0f} [{pt['min']}, {pt['max']}]; torch {f['torch']}, {f['threads']} threads; "
             f"timed in {f['chunks']} alternating chunks; {f['exemplars']} exemplars"
             + (f"; each request also a greedy answer of up to {f['generate']} tokens" if f.get("generate") else ""),
             f"{f.get('cpu_kind', 'CPU')}; matmul peak (2048^2): "
             + ", ".join(f"{'fp32' if dt == 'float32' else 'bf16'} {v:.1f} GFLOP/s" for dt, v in f["matmul_peak_gflops"].items())]
    for name in ("symtune_fp32", "lm_eval_fp32", "symtune_bf16", "symtune_naive_fp32"):
        if name not in f:
            continue
        r = f[name]
        line = f"{name:>18}: {r['req_per_s']:.3f} req/s ({r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU)"
        if "gflops_achieved" in r:
            line += f", {r['gflops_achieved']:.1f} GFLOP/s achieved"
        if "gflops_useful" in r:
            line += f" ({r['gflops_useful']:.1f} without padding)"
        if name != "symtune_fp32":
            line += (f"; vs symtune fp32: max |Δ loglik| {r['max_abs_diff_vs_symtune_fp32']:.2e}, prediction "
                     f"agreement {r['agreement_vs_symtune_fp32']:.3f}")
            if "generation_agreement_vs_symtune_fp32" in r:
                line += f", same greedy answer {r['generation_agreement_vs_symtune_fp32']:.3f}"
        lines.append(line + f"; accuracy (acc) {r['accuracy']:.3f}")
    if f.get("generate"):
        lines.append("(GFLOP/s count the prompt and candidate forwards only, not the answer decoding)")
    if "speedup_fp32" in f:
        lines.append(f"SPEEDUP symtune / lm-eval (fp32): {f['speedup_fp32']:.2f}x wall-clock "
                     f"({f['speedup_fp32_cpu_time']:.2f}x in process CPU time)")
    st = f["symtune_fp32"]["stats"]
    lines.append(f"symtune fp32: {st['forward_tokens']} tokens forwarded ({st['padded_tokens']} padding, "
                 f"{st['shared_prefix_tokens']} not forwarded again thanks to shared prefixes) against a lower bound "
                 f"of {f['unique_tokens']} distinct prompt+candidate prefixes; "
                 f"{st['lm_head_rows']} LM-head rows, {st['prefix_fallbacks']} prefix fallbacks"
                 + (f"; lm-eval forwarded {f['lm_eval_fp32']['tokens_fed']} tokens, LM head on all"
                    if "lm_eval_fp32" in f else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
