"""Prompt-building speed of the full offline symbol-tuning mixture.

Builds every tune-role task available under --data-dir (up to --max-per-task prompts each, 2-10 exemplars
per class, random formats, tuning symbols) on one core and prints prompts/s: first the episode draws and
rendering alone (tokenisation excluded), then with the token budget measured by the fast tokenizer in
batches. Target: >= 10,000 prompts/s without tokenisation.

    python bench/mixture_speed.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core for the tokenizer too
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("SYMTUNE_TEST_DATA", "../shared/data"))
    p.add_argument("--max-per-task", type=int, default=25_000)
    p.add_argument("--skip-tokenized", action="store_true", help="only the tokenisation-free figure")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from symtune.episodes import PieceMeasure, prepare_task
    from symtune.mixture import MixtureConfig, iter_task_records
    from symtune.symbols import SymbolPool
    from symtune.tasks import load_catalogue, select_tasks

    config = MixtureConfig(data_dir=args.data_dir, max_per_task=args.max_per_task)
    specs = select_tasks(load_catalogue(args.data_dir), role="tune", data_dir=args.data_dir)
    t0 = time.perf_counter()
    tasks = [prepare_task(s, args.data_dir, purpose="tune") for s in specs]
    pool = SymbolPool("tune", tuple(config.symbol_categories))
    pool.sample(1, __import__("random").Random(0))  # builds the pools once (wordfreq load), outside the timing
    t_load = time.perf_counter() - t0
    print(f"{len(tasks)} tune tasks loaded in {t_load:.1f}s")

    t0 = time.perf_counter()
    n = chars = 0
    for task in tasks:
        for r in iter_task_records(task, config, pool):
            n += 1
            chars += len(r["prompt"])
    dt = time.perf_counter() - t0
    print(f"without tokenisation: {n} prompts in {dt:.1f}s = {n / dt:,.0f} prompts/s "
          f"({chars / n:,.0f} chars/prompt), one core; target >= 10,000: {'met' if n / dt >= 10_000 else 'NOT met'}")
    if args.skip_tokenized:
        return
    from symtune.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    t0 = time.perf_counter()
    n2, skipped = 0, {}
    for task in tasks:
        measure = PieceMeasure(tok, task)
        for _ in iter_task_records(task, config, pool, measure, skipped):
            n2 += 1
    dt2 = time.perf_counter() - t0
    print(f"with the 2048-token budget (batched fast tokenizer): {n2} prompts in {dt2:.1f}s = {n2 / dt2:,.0f} prompts/s, "
          f"{sum(skipped.values())} skipped over budget; ratio {(n / dt) / (n2 / dt2):.1f}x slower with tokenisation")


if __name__ == "__main__":
    main()
