"""`symtune export lm-eval`: the evaluation suite as lm-evaluation-harness tasks, to cross-check in the harness.

Each (task, setting) becomes two harness tasks over the very prompts symtune scores: `<name>` (multiple
choice: the label with the highest log-likelihood after the prompt, as symtune's `acc`) and `<name>_gen`
(greedy generation until a newline, exact match after stripping and lower-casing, as symtune's `gen_acc`).
The prompts already hold their exemplars, so the harness runs them zero-shot. Data files are written beside
the YAMLs and referenced by absolute path: export again if you move the directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .files import write_atomic


def export_lm_eval(items: list[dict], out: str | Path, prefix: str = "symtune") -> list[str]:
    """Write task YAMLs + JSONL data for planned evaluation items (symtune.planning.plan_icl); returns the
    harness task names (a group `<prefix>` holds them all)."""
    out = Path(out).resolve()
    (out / "data").mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict]] = {}
    for it in items:
        if it.get("trial", 0) != 0:
            continue  # the harness has no notion of exemplar trials: export the first draw
        groups.setdefault(f"{prefix}_{it['task']}_{it['setting'].replace('+', '_')}", []).append(it)
    names = []
    for name, rows in sorted(groups.items()):
        data = out / "data" / f"{name}.jsonl"
        write_atomic(data, "".join(
            json.dumps({"id": r["id"], "prompt": r["prompt"], "choices": r["labels"], "gold": r["labels"].index(r["gold"]),
                        "gold_text": r["gold"]}, ensure_ascii=False) + "\n" for r in rows))  # fmt: skip
        common = {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "doc_to_text": "{{prompt}}",
            "num_fewshot": 0,
        }
        mc = {"task": name, **common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
              "doc_to_target": "{{gold}}", "target_delimiter": " ",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}  # fmt: skip
        gen = {"task": f"{name}_gen", **common, "output_type": "generate_until", "doc_to_target": "{{gold_text}}",
               "target_delimiter": " ", "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 16},
               "filter_list": [{"name": "strip", "filter": [{"function": "regex", "regex_pattern": r"^\s*(.*?)[\s.,;:!?]*$"},
                                                            {"function": "take_first"}]}],
               "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                "ignore_case": True, "ignore_punctuation": False}]}  # fmt: skip
        write_atomic(out / f"{name}.yaml", yaml.safe_dump(mc, sort_keys=False, allow_unicode=True))
        write_atomic(out / f"{name}_gen.yaml", yaml.safe_dump(gen, sort_keys=False, allow_unicode=True))
        names += [name, f"{name}_gen"]
    write_atomic(out / f"{prefix}.yaml", yaml.safe_dump({"group": prefix, "task": names}, sort_keys=False))
    return names
