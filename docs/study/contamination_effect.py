"""What contamination moved: saved study results split by whether a query (or exemplar) overlaps a tuning row.

Reads only the saved run directories under docs/study and the task data passed with --data-dir; runs no model.
A query is *seen* when its row overlaps (symtune.decontaminate: equal normalised input or a shared 13-gram) a
train row of a task in the run's mixture; *drawn* when that train row was also one of the mixture's prompts
(query or exemplar, redrawn here as symtune.mixture draws them, before the token budget's trimming). A sample's
`query` is its row index in the task's query split (planning.plan_icl: ep.query), so it indexes the same rows.

    .venv/bin/python docs/study/contamination_effect.py --data-dir /work/shared/data > /tmp/contamination.md
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

from symtune.decontaminate import _Index, read_task
from symtune.episodes import draw_episode, prepare_task, query_order, render
from symtune.mixture import MixtureConfig, _setting
from symtune.report import load_run
from symtune.report.paired import icl_delta
from symtune.symbols import SymbolPool
from symtune.tasks import load_catalogue

STUDY = Path(__file__).parent
TEST = [
    "runs/test/mixed50-1m",
    "gemma/test/mixed50",
    "gemma/test/lr3e-5",
    "gemma/test/control-natural",
    "gemma/test/control-random",
]
VALIDATION = [
    "runs/validation/mixed50-1m",
    "runs/validation/mixed50-lora",
    "runs/validation/mixed50-sym300",
    "gemma/validation/mixed50",
    "gemma/validation/lr3e-5",
]
SETTINGS = ("natural", "symbol", "flipped")
METRICS = {"gen_acc": "generation accuracy", "acc": "rank accuracy"}


def overlaps(catalogue, data_dir, tuning: list[str], evaluation: str) -> dict[str, dict[int, set]]:
    """{split: {row: {(tuning task, train row), ...}}} for the evaluation task's test and train rows."""
    ev = read_task(catalogue[evaluation], data_dir, ["test", "train"])
    index = _Index()
    for s, rows in ev.splits.items():
        for i, words in enumerate(rows):
            index.add(words, (0, s, i))
    hits: dict[str, dict[int, set]] = {"test": {}, "train": {}}
    for t in tuning:
        for i, words in enumerate(read_task(catalogue[t], data_dir, ["train"]).splits["train"]):
            same, shared = index.find(words)
            for r in same + shared:
                _, s, j = index.rows[r]
                hits[s].setdefault(j, set()).add((t, i))
    return hits


def drawn_rows(catalogue, data_dir, manifest: dict, task: str) -> set[int]:
    """Train rows of `task` that the mixture used as a query or an exemplar (rows were kept: no decontamination)."""
    c = MixtureConfig(
        **{k: v for k, v in manifest["config"].items() if k in MixtureConfig.__dataclass_fields__}
    )
    data = prepare_task(catalogue[task], data_dir, purpose="tune")
    assert data.sha256["train"] == manifest["tasks"][task]["sha256"]["train"], (
        f"{task}: data changed since the mixture"
    )
    pool = SymbolPool("tune", tuple(c.symbol_categories), c.num_symbols)
    rows = set()
    for q in query_order(data, c.seed)[: c.max_per_task]:
        ep = draw_episode(
            data,
            q,
            seed=c.seed,
            setting=_setting(data, c, q),
            k=(c.k_min, c.k_max),
            pool=pool,
            fmt=c.formats or "random",
        )
        rows |= {q, *ep.exemplars}
    return rows


def exemplars_seen(catalogue, data_dir, run, task: str, seen_train: set[int], drawn: set[int]) -> dict:
    """{sample id: (exemplars of its prompt that are seen train rows, that are drawn ones)}, redrawn from the eval
    config and checked against the saved prompt hash."""
    cfg = run.base.results.config
    data = prepare_task(catalogue[task], data_dir, purpose="eval")
    pool = SymbolPool(cfg.get("symbols", "heldout"))
    out, checked = {}, 0
    for s in run.base.samples:
        if s.get("task") != task:
            continue
        ep = draw_episode(
            data,
            s["query"],
            seed=cfg["seed"],
            setting=s["setting"],
            k=cfg["k"],
            pool=pool,
            fmt=cfg["fmt"],
            trial=s["trial"],
        )
        # not trimmed to the budget: the prompt must be the saved one
        if s["n_exemplars"] == len(ep.exemplars):
            assert hashlib.sha256(render(data, ep)[0].encode()).hexdigest() == s["prompt_sha256"], s["id"]
            checked += 1
        out[s["id"]] = (sum(i in seen_train for i in ep.exemplars), sum(i in drawn for i in ep.exemplars))
    out["_checked"] = checked
    return out


def pct(rows, metric) -> str:
    v = [s["correct"].get(metric) for s in rows if s["correct"].get(metric) is not None]
    return f"{100 * sum(v) / len(v):.1f}" if v else "-"


def cell(base, tuned, metric, unit) -> str:
    d = icl_delta(base, tuned, metric)
    if d is None:
        return "- | - | -"
    n = len(base) if unit == "prompts" else len({s["query"] for s in base})
    return f"{n} | {pct(base, metric)} → {pct(tuned, metric)} | {100 * d['delta']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"


def split_table(runs, task, side, metric, labels=("seen", "clean"), unit="queries") -> list[str]:
    """Per run and setting, `task`'s samples split by side(run name, sample): base → tuned and paired Δ."""
    out = [
        f"| run | setting | {labels[0]}: {unit} | base → tuned | Δ [95% CI] | {labels[1]}: {unit} | base → tuned | Δ [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs:
        for st in SETTINGS:
            b = [s for s in run.base.rows("icl", st) if s["task"] == task]
            t = [s for s in run.tuned.rows("icl", st) if s["task"] == task]
            if not b:
                continue
            halves = [
                cell([s for s in b if side(name, s) == x], [s for s in t if side(name, s) == x], metric, unit)
                for x in (True, False)
            ]
            out.append(f"| {name} | {st} | {halves[0]} | {halves[1]} |")
    return out


def without(rows, task, queries=None) -> list[dict]:
    """The rows less `task`'s samples (only those of `queries` when given)."""
    return [s for s in rows if not (s["task"] == task and (queries is None or s["query"] in queries))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    catalogue = load_catalogue(args.data_dir)
    test = [(n, load_run(STUDY / n)) for n in TEST]
    val = [(n, load_run(STUDY / n)) for n in VALIDATION]
    tuning = sorted(test[0][1].mixture["counts"])
    assert all(sorted(r.mixture["counts"]) == tuning for _, r in test + val), "runs tuned on different tasks"
    print(f"Tuning tasks of every run's mixture ({len(tuning)}): {', '.join(tuning)}\n")
    for task, runs in (("subj", test), ("sst5", val)):
        hits = overlaps(catalogue, args.data_dir, tuning, task)
        seen_q, seen_train = set(hits["test"]), set(hits["train"])
        by_task = Counter(t for v in hits["test"].values() for t in {t for t, _ in v})
        asked = sorted({s["query"] for s in runs[0][1].base.samples if s.get("task") == task})
        print(
            f"## {task}\n\nseen test queries: {len(seen_q)} of {len(read_task(catalogue[task], args.data_dir, ['test']).splits['test'])}"
            f" ({dict(by_task)}); seen train rows (exemplar pool): {len(seen_train)}"
        )
        gold = prepare_task(catalogue[task], args.data_dir, purpose="eval").queries
        print(
            f"gold labels, all seen test queries: {dict(Counter(gold[q]['label'] for q in seen_q))}; all clean: "
            f"{dict(Counter(r['label'] for q, r in enumerate(gold) if q not in seen_q))}"
        )
        print(
            f"evaluated queries: {len(asked)}, seen: {sorted(q for q in asked if q in seen_q)}; gold labels, seen: "
            f"{dict(Counter(gold[q]['label'] for q in asked if q in seen_q))}, clean: "
            f"{dict(Counter(gold[q]['label'] for q in asked if q not in seen_q))}"
        )
        exd = {}
        for name, run in runs:
            if not run.mixture:
                continue
            drawn = {
                t: drawn_rows(catalogue, args.data_dir, run.mixture, t)
                for t in sorted({t for h in hits.values() for v in h.values() for t, _ in v})
            }
            tq = {q for q, v in hits["test"].items() if any(i in drawn[t] for t, i in v)}
            tr = {q for q, v in hits["train"].items() if any(i in drawn[t] for t, i in v)}
            ex = exemplars_seen(catalogue, args.data_dir, run, task, seen_train, tr)
            checked = ex.pop("_checked")
            exd[name] = ex
            mean = sum(v for v, _ in ex.values()) / len(ex)
            mean_drawn = sum(d for _, d in ex.values()) / len(ex)
            print(
                f"- {name}: mixture {run.mixture_path.name} ({run.mixture['config']['max_per_task']} prompts/task) "
                f"drew rows overlapping {len(tq)} test queries ({len(tq & set(asked))} evaluated: "
                f"{sorted(tq & set(asked))}) and {len(tr)} train rows; evaluated prompts' exemplars seen: "
                f"mean {mean:.2f} of {len(catalogue[task].labels) * run.base.results.config['k']}, "
                f"prompts with none {sum(v == 0 for v, _ in ex.values())} of {len(ex)}; drawn: mean {mean_drawn:.2f}, "
                f"prompts with none {sum(d == 0 for _, d in ex.values())} "
                f"(prompt hashes checked: {checked})"
            )
        for metric, label in METRICS.items():
            print(f"\n### {task}, {label} (points), seen vs clean queries\n")
            print("\n".join(split_table(runs, task, lambda _, s, q=seen_q: s["query"] in q, metric)))
        print(
            f"\n### {task}, generation accuracy (points), prompts with and without an exemplar drawn into the mixture\n"
        )
        side = lambda name, s, e=exd: e[name][s["id"]][1] > 0  # noqa: E731
        print("\n".join(split_table(runs, task, side, "gen_acc", ("drawn exemplar", "none"), "prompts")))
        print(
            f"\n### Macro Δ over the suite's tasks, generation accuracy: all {task} queries, its seen queries left out, "
            f"{task} left out\n"
        )
        print(
            f"| run | setting | all queries: Δ [95% CI] | without seen {task} queries | change | without {task} | change |"
        )
        print("|---|---|---|---|---|---|---|")
        f = lambda d: f"{100 * d['delta']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"  # noqa: E731
        for name, run in runs:
            for st in SETTINGS:
                b, t = run.base.rows("icl", st), run.tuned.rows("icl", st)
                if not any(s["task"] == task for s in b):
                    continue
                d0 = icl_delta(b, t, "gen_acc")
                d1 = icl_delta(without(b, task, seen_q), without(t, task, seen_q), "gen_acc")
                d2 = icl_delta(without(b, task), without(t, task), "gen_acc")
                print(
                    f"| {name} | {st} | {f(d0)} | {f(d1)} | {100 * (d1['delta'] - d0['delta']):+.1f} | {f(d2)} | "
                    f"{100 * (d2['delta'] - d0['delta']):+.1f} |"
                )
        print()


if __name__ == "__main__":
    main()
