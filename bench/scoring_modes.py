"""symtune's scoring modes on any device, against per-candidate padded batches, on the same requests.

For GPUs (and any machine where the real weights cannot go): a randomly initialised model of a real
architecture is honest for speed, since the work does not depend on the weights' values. The requests are
the paper suite's, rendered with the real tokenizer, in both exemplar protocols:

    python bench/scoring_modes.py --data-dir PATH --save-requests reqs.json        # once, where the data is
    python bench/scoring_modes.py --requests reqs.json --tokenizer TOKDIR --arch 1b --device cuda

Modes, each over the same requests: `packed` (symtune's path: trees in rows, shared prefixes once),
`padded` (every prompt + candidate as its own padded sequence in length-sorted batches, the LM head on the
candidate positions: how lm-eval's hf backend scores), and `naive` (symtune's reference: one forward per
prompt + candidate) on a few requests to check exactness. Prints requests/s, tokens forwarded against the
distinct-prefix lower bound, achieved TFLOP/s against a matmul peak measured in the same run, and the
largest |Δ log-likelihood| against the reference.

Host work per request: each mode is run once more with the model's compute taken out (a stand-in returns
zeros of the right shapes: no decoder, no LM head), so what is left is tokenising, planning, building the
batches and masks, and reading the results: the work that bounds a small model on a fast GPU. Printed in ms
per request beside the number of model forwards per request. Each forward also has a fixed cost in the
model's own Python and kernel launches, printed first: a model of the architecture's depth and almost no width
(15-26 ms for 30 layers on 2 cores of an AMD EPYC). `--host-only` prints these alone, in seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch
from tune_vs_trl import SIZES, machine_kind, matmul_peak, random_llama_config  # bench/ is on the path


def random_model(size: str, tok, dtype: torch.dtype, device: str):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = random_llama_config(size, tok, tie_word_embeddings=False, attn_implementation="sdpa")
    with torch.device(device):
        return LlamaForCausalLM(cfg).to(dtype).eval()


class Padded:
    """Per-candidate scoring as lm-eval's hf backend does it: each prompt + candidate one padded sequence."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tok, self.bs = model, tokenizer, batch_size
        self.tokens = 0

    def logits(self, ids):
        return self.model(input_ids=ids).logits

    def loglikelihoods(self, requests):
        dev = next(self.model.parameters()).device
        seqs = []
        for r, (p, cands) in enumerate(requests):
            ctx = self.tok(p).input_ids
            for k, c in enumerate(cands):
                whole = self.tok(p + c).input_ids
                seqs.append((r, k, whole, len(whole) - len(ctx)))
        out = [[0.0] * len(c) for _, c in requests]
        seqs.sort(key=lambda s: -len(s[2]))
        for i in range(0, len(seqs), self.bs):
            batch = seqs[i:i + self.bs]
            n = max(len(s[2]) - 1 for s in batch)
            ids = torch.tensor([s[2][:-1] + [0] * (n - len(s[2]) + 1) for s in batch], device=dev)
            self.tokens += ids.numel()
            with torch.inference_mode():
                logits = self.logits(ids)
            for b, (r, k, whole, m) in enumerate(batch):
                lp = torch.log_softmax(logits[b, len(whole) - 1 - m:len(whole) - 1].float(), -1)
                out[r][k] = lp.gather(1, torch.tensor(whole[-m:], device=dev)[:, None]).sum().item()
        return out


@contextmanager
def no_model(be):
    """The scorer with the model's compute taken out: its decoder (and the padded baseline's whole model) returns
    zeros of the shapes it would; the LM head returns zero logits.
    Yields the list of the forwards it stood in for."""
    cfg = be.model.config.get_text_config()
    d, vocab = cfg.hidden_size, cfg.vocab_size
    dev, dtype = next(be.model.parameters()).device, be.model.dtype

    calls = []  # one per model forward

    def decoder(input_ids, **kw):  # (a key/value cache it is given stays empty: filling it is the model's work)
        calls.append(input_ids.numel())
        return SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, d, device=dev, dtype=dtype))

    def logits(ids):  # the padded baseline's whole model
        calls.append(ids.numel())
        return torch.zeros(1, 1, vocab, device=dev).expand(*ids.shape, vocab)

    saved = dict(be.__dict__)
    if isinstance(be, Padded):
        be.logits = logits
    else:
        be._decoder = lambda: decoder
        be._head = lambda h: torch.zeros(len(h), vocab, device=dev)
    try:
        yield calls
    finally:
        be.__dict__.clear()
        be.__dict__.update(saved)


def forward_overhead(arch: str, tok, device: str, dtype: torch.dtype) -> float:
    """Seconds per forward of a model of the architecture's depth with almost no width (4 tokens): the fixed
    cost every forward pays in Python and kernel launches, whatever its size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    layers = SIZES[arch][2]
    cfg = LlamaConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), attn_implementation="sdpa")
    with torch.device(device):
        dec = LlamaForCausalLM(cfg).to(dtype).eval().get_decoder()
    ids = torch.zeros(1, 4, dtype=torch.long, device=device)
    with torch.inference_mode():
        for _ in range(3):
            dec(input_ids=ids)
        _sync(device)
        t, k = time.perf_counter(), 20
        for _ in range(k):
            dec(input_ids=ids)
        _sync(device)
    return (time.perf_counter() - t) / k


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--save-requests", type=Path, help="render the requests (both protocols) to this file and stop")
    ap.add_argument("--n", type=int, default=120, help="requests per protocol")
    ap.add_argument("--requests", type=Path)
    ap.add_argument("--tokenizer", default="smollm2-135m", help="a tokenizer directory or a symtune model alias")
    ap.add_argument("--arch", default="135m", choices=sorted(SIZES), help="a Llama shape (135m: SmolLM2-135M's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--batch-size", type=int, default=32, help="padded baseline: sequences per forward")
    ap.add_argument("--row-tokens", type=int, default=1024)
    ap.add_argument("--batch-tokens", type=int, help="packed: tokens per forward (default: the backend's)")
    ap.add_argument("--wave-tokens", type=int, help="packed: prefix tokens per wave (default: the backend's, 0 on a "
                    "CPU: one group a wave; pass --batch-tokens' value to plan as on a GPU)")
    ap.add_argument("--check", type=int, default=6, help="requests checked against the naive reference")
    ap.add_argument("--host-only", action="store_true",
                    help="only the host work per request and the forwards (the model's compute taken out): seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    if args.save_requests:
        from eval_vs_lm_eval import build_requests

        reqs = {proto: [(p, c) for p, c, _ in build_requests(args.data_dir, args.n, exemplars=proto)]
                for proto in ("per-query", "shared")}
        args.save_requests.write_text(json.dumps(reqs))
        print(f"{sum(map(len, reqs.values()))} requests -> {args.save_requests}")
        return None

    from transformers import AutoTokenizer

    from symtune.scoring import HFBackend
    from symtune.scoring.packing import trie_tokens

    if Path(args.tokenizer).is_dir():
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from symtune.models import load_tokenizer, resolve_model

        tok = load_tokenizer(resolve_model(args.tokenizer))
    reqs = json.loads(args.requests.read_text())
    fig = {"arch": args.arch, "device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "kind": machine_kind(args.device)[1], "torch": torch.__version__, "runs": {}}
    print(f"{args.arch} (random init) on {fig['gpu'] or args.device} ({fig['kind']}), torch {torch.__version__}", flush=True)
    for dname in args.dtypes:
        dtype = getattr(torch, dname)
        model = random_model(args.arch, tok, dtype, args.device)
        body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
        peak = matmul_peak(args.device, dname, 8192 if args.device.startswith("cuda") else 2048, seconds=1.0) / 1e12
        packed = HFBackend(model, tok, row_tokens=args.row_tokens, batch_tokens=args.batch_tokens,
                           wave_tokens=args.wave_tokens)
        naive = HFBackend(model, tok, naive=True)
        padded = Padded(model, tok, args.batch_size)
        overhead = forward_overhead(args.arch, tok, args.device, dtype)
        print(f"{dname:>8}: a forward's fixed cost (Python + launches, {SIZES[args.arch][2]} layers): "
              f"{1000 * overhead:.1f} ms", flush=True)
        for proto, rs in reqs.items():
            rs = [(p, list(c)) for p, c in rs]
            lower = trie_tokens([packed.encode(p + c)[:-1] for p, cs in rs for c in cs])
            ref = naive.loglikelihoods(rs[:args.check]) if not args.host_only else None
            row = {"requests": len(rs), "distinct_prefix_tokens": lower, "peak_tflops": peak,
                   "forward_overhead_ms": 1000 * overhead}
            for name, be in (("packed", packed), ("padded", padded)):
                be.loglikelihoods(rs[:4])  # warm-up
                for timed in (False, True) if not args.host_only else (False,):
                    if name == "packed":
                        be.stats = dict.fromkeys(be.stats, 0)
                    else:
                        be.tokens = 0
                    with no_model(be) if not timed else nullcontext([]) as calls:
                        _sync(args.device)
                        t = time.perf_counter()
                        got = be.loglikelihoods(rs)
                        _sync(args.device)
                        secs = time.perf_counter() - t
                        tokens = be.stats["forward_tokens"] if name == "packed" else be.tokens
                    r = row.setdefault(name, {"tokens": tokens, "forwards": len(calls),
                                              "host_ms_per_request": 1000 * secs / len(rs)})
                    if timed:
                        lls = [[x.logprob for x in req] if name == "packed" else req for req in got]
                        diff = max(abs(a - b.logprob) for ra, rb in zip(lls, ref) for a, b in zip(ra, rb))
                        r.update(seconds=secs, req_per_s=len(rs) / secs, tflops=2 * body * tokens / secs / 1e12,
                                 max_abs_diff_vs_naive=diff)
            if args.host_only:
                fig["runs"][f"{dname}/{proto}"] = row
                for name in ("packed", "padded"):
                    r = row[name]
                    print(f"{dname:>8} {proto:>9} {name:>7}: {r['tokens']:>7} tokens, {r['forwards']:>4} forwards "
                          f"({r['forwards'] / len(rs):.3f} per request), host work {r['host_ms_per_request']:.2f} ms "
                          "per request", flush=True)
                continue
            row["speedup"] = row["padded"]["seconds"] / row["packed"]["seconds"]
            fig["runs"][f"{dname}/{proto}"] = row
            print(f"{dname:>8} {proto:>9}: speed-up packed / padded {row['speedup']:.2f}x; lower bound {lower} tokens; "
                  f"matmul peak {peak:.1f} TFLOP/s", flush=True)
            for name in ("packed", "padded"):
                r = row[name]
                print(f"{'':>19}{name:>7}: {r['req_per_s']:7.1f} req/s, {r['tokens']:>7} tokens, {r['forwards']:>4} forwards "
                      f"({r['forwards'] / len(rs):.2f} per request), {r['tflops']:6.2f} TFLOP/s, host work "
                      f"{r['host_ms_per_request']:.2f} ms per request, max |Δ| vs naive {r['max_abs_diff_vs_naive']:.1e}",
                      flush=True)
        del model, packed, naive, padded
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    return fig


if __name__ == "__main__":
    main()
