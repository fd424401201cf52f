"""The one runner every query goes through: plan order -> result cache -> backend -> results, chunk by chunk,
shared among the processes `accelerate launch` started (ICL ranking and greedy answers, and the algorithmic
suite's answers, all come through `run_cached`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from .accelerator import check_launch_environment, has_accelerator
from .cache import ResultCache, cache_key
from .formats import STOP

# Queries per scoring call, cut from the plan in order: the cache is written after each, and with several
# processes each takes every n-th chunk. A chunk is scored the same way whichever process scores it, so the
# numbers do not depend on the number of processes.
CHUNK = 32


@dataclass
class Processes:
    """This process's place among those `accelerate launch` started; one process alone by default."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    barrier: Callable[[], None] = lambda: None

    @property
    def main(self) -> bool:
        return self.rank == 0


def processes() -> Processes:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    check_launch_environment("symtune eval")
    state = PartialState(cpu=not has_accelerator())  # several CPU processes: gloo
    return Processes(state.process_index, state.num_processes, state.local_process_index, state.wait_for_everyone)


def cache_key_of(backend, kind: str, item: dict, max_new_tokens: int) -> str:
    parts = {"model": backend.identity, "kind": kind, "prompt": item["prompt"]}
    if kind == "rank":
        parts["candidates"] = item["candidates"]
    else:
        parts.update(max_new_tokens=max_new_tokens, stop=item.get("stop", STOP))
    return cache_key(**parts)


def run_cached(items, backend, cache: ResultCache, kinds: tuple[str, ...], max_new_tokens: int, bar,
                procs: Processes) -> dict:
    """{kind: {item id: value}} for every item, from the cache or computed chunk by chunk (then cached); with
    several processes each computes its share of the chunks and all read the others' results at the end.
    With both kinds, one pass over each prompt serves the ranking and the generation."""
    keys = {kind: [cache_key_of(backend, kind, it, max_new_tokens) for it in items] for kind in kinds}
    chunks = [range(s, min(s + CHUNK, len(items))) for s in range(0, len(items), CHUNK)]
    for chunk in chunks[procs.rank::procs.world]:
        todo = [i for i in chunk if any(keys[k][i] not in cache for k in kinds)]
        if todo:
            prompts = [items[i]["prompt"] for i in todo]
            stop = items[todo[0]].get("stop", STOP)  # one evaluation, one prompt format: its items stop alike
            if kinds == ("gen",):
                got = {"gen": backend.generate(prompts, max_new_tokens, stop)}
            else:
                requests = [(p, items[i]["candidates"]) for p, i in zip(prompts, todo)]
                if "gen" in kinds:
                    scores, gens = backend.score_and_generate(requests, max_new_tokens, stop)
                    got = {"rank": scores, "gen": gens}
                else:
                    got = {"rank": backend.loglikelihoods(requests)}
                got["rank"] = [[asdict(c) for c in sc] for sc in got["rank"]]
            cache.put_many({keys[k][i]: v for k in kinds for i, v in zip(todo, got[k])})
        bar.update(len(chunk) * procs.world)
    if procs.world > 1:
        procs.barrier()
        cache.refresh()
    return {k: {it["id"]: cache.get(key) for it, key in zip(items, keys[k])} for k in kinds}


def for_process(config, procs: Processes):
    """One of several processes: its own GPU (cuda -> cuda:<local rank>), or its share of the CPU cores."""
    if procs.world == 1:
        return config
    if config.device == "cuda":
        return replace(config, device=f"cuda:{procs.local_rank}")
    if config.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", procs.world))))
    return config
