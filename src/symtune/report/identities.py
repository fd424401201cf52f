"""The run's identity: stages, models, mixture, evaluation data and configs, versions, timings, configs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .runs import STAGES, Run
from .sections import num


def _model(identity: dict | None) -> str:
    if not identity:
        return "-"
    parts = [f"`{identity.get('name') or identity.get('model') or identity.get('path')}`"]
    if identity.get("path") and identity.get("path") != identity.get("name"):
        parts.append(f"at `{identity['path']}`" + (f" / `{identity['gguf_file']}`" if identity.get("gguf_file") else ""))
    files = identity.get("files") or {}
    if files:
        parts.append("weights " + ", ".join(f"`{Path(k).name}` sha256 {str(v)[:16]}…" for k, v in list(files.items())[:3]))
    if identity.get("adapter"):
        parts.append(f"adapter `{identity['adapter'].get('path')}`")
    if identity.get("dtype"):
        parts.append(identity["dtype"])
    return ", ".join(parts)


EVAL_KEYS = ("suite", "tasks", "settings", "k", "seed", "trials", "limit", "max_queries", "fmt", "max_tokens",
             "generate", "max_new_tokens", "dtype", "data_dir")  # fmt: skip


def identities(run: Run) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Config and data identities")]
    if run.state is not None:
        stages = run.state.get("stages") or {}
        stages = {k: stages[k] for k in sorted(stages, key=lambda k: (STAGES.index(k) if k in STAGES else len(STAGES), k))}
        rows = [[name, str(st.get("status")), f"`{st.get('dir')}`", str(st.get("key") or "-")[:16],
                 num(st.get("seconds"), 0) if isinstance(st.get("seconds"), (int, float)) else "-"]
                for name, st in stages.items() if name != "report"]  # fmt: skip
        blocks += [("h", 3, "Stages"), ("table", ["stage", "status", "directory", "key", "seconds"], rows)]
    evals = run.evaluations
    models = [[e.label, _model(e.results.model), f"`{e.path}`"] for e in evals]
    if run.training and run.training.summary:
        models.append(["tuning base", _model(run.training.summary.get("model_identity")), f"`{run.training.path}`"])
    if models:
        blocks += [("h", 3, "Models"), ("table", ["role", "identity", "directory"], models)]
    blocks.append(("h", 3, "Mixture"))
    if run.mixture:
        m = run.mixture
        cfg = m.get("config") or {}
        blocks.append(("ul", [f"directory: `{run.mixture_path}`", f"records.jsonl sha256: `{(m.get('sha256') or {}).get('records.jsonl')}`",
                              f"records: {m.get('total')} from {len(m.get('counts') or {})} tasks",
                              "config: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in cfg.items() if not isinstance(v, (dict, list)) or len(json.dumps(v)) < 60)]))  # fmt: skip
        if m.get("counts"):
            blocks.append(("p", "Records per tuning task: " + ", ".join(f"{t} {n}" for t, n in sorted(m["counts"].items())) + "."))
    else:
        why = [n for n in run.notes if n.startswith("mixture")]
        blocks.append(("p", "No mixture manifest: " + ("; ".join(why) if why else "this run has no mixture stage") + "."))
    with_data = [e for e in evals if e.results.data]
    if with_data:
        data = with_data[0].results.data
        rows = [[t, str(i.labels), f"{i.query_split} / {i.exemplar_split}",
                 ", ".join(f"{sp}: `{Path(src).name}`" for sp, src in i.sources.items()),
                 ", ".join(f"{sp}: {h[:16]}…" for sp, h in i.sha256.items()),
                 json.dumps(i.skipped) if i.skipped else "-", str(i.trimmed)] for t, i in data.items()]  # fmt: skip
        blocks += [("h", 3, "Evaluation data"),
                   ("table", ["task", "labels", "query / exemplar split", "sources", "sha256", "skipped", "exemplars dropped to fit"], rows)]  # fmt: skip
        if len(with_data) == 2:
            other = with_data[1].results.data
            diff = sorted(t for t in set(data) | set(other)
                          if getattr(data.get(t), "sha256", None) != getattr(other.get(t), "sha256", None))  # fmt: skip
            blocks.append(("p", f"**The two evaluations read different data for: {', '.join(diff)}.** Their numbers are not comparable there."
                           if diff else "Both evaluations read byte-identical task data (same sha256)."))  # fmt: skip
    if evals:
        cfgs = [e.results.config for e in evals]
        rows = [[k, *[json.dumps(c.get(k)) for c in cfgs]] for k in EVAL_KEYS if any(k in c for c in cfgs)]
        blocks += [("h", 3, "Evaluation configs"), ("table", ["field", *[e.label for e in evals]], rows)]
        differ = [r[0] for r in rows if len(set(r[1:])) > 1]
        if len(evals) == 2 and differ:
            blocks.append(("p", f"**The evaluation configs differ in: {', '.join(differ)}.**"))
    versions = {e.label + " eval": e.results.versions for e in evals}
    if run.training and run.training.summary:
        versions["tune"] = run.training.summary.get("versions") or {}
    if run.mixture:
        versions["mixture"] = run.mixture.get("versions") or {}
    if versions:
        names = list(dict.fromkeys(k for v in versions.values() for k in v))
        blocks += [("h", 3, "Versions"), ("table", ["package", *versions], [[n, *[str(v.get(n, "-")) for v in versions.values()]] for n in names])]
    timing = [[f"{e.label} evaluation", num(e.results.timing.seconds, 0),
               f"{e.results.timing.queries} queries, {e.results.timing.resumed_from_cache} from cache"]
              for e in evals if e.results.timing]  # fmt: skip
    if run.training and run.training.summary:
        res = run.training.summary.get("results") or {}
        timing.insert(0, ["tuning", num(res.get("train_seconds"), 0), f"{res.get('steps')} steps"])
    if timing:
        blocks += [("h", 3, "Timings"), ("table", ["stage", "seconds", "work"], timing)]
    if run.config:
        blocks += [("h", 3, "Run config (state.json)"), ("code", yaml.safe_dump(run.config, sort_keys=False))]
    if run.training and run.training.config:
        blocks += [("h", 3, f"Tuning config ({run.training.config_file})"), ("code", yaml.safe_dump(run.training.config, sort_keys=False))]
    return blocks
