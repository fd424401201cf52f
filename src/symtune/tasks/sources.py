"""Reading a task's rows: a local directory (<split>.jsonl, .csv or .parquet) or the Hugging Face hub."""

from __future__ import annotations

import csv
import functools
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..provenance import file_sha256
from .spec import TaskError, TaskSpec

SPLITS = ("train", "validation", "test")
EXTENSIONS = (".jsonl", ".csv", ".parquet")


@dataclass
class Rows:
    """The usable rows of one split: each a dict of the input fields (strings) and "label" (a label name)."""

    task: str
    split: str
    rows: list[dict]
    source: str  # a file path or hub id, for reports
    sha256: str  # content hash of the source file ("" for the hub: the revision is in `source`)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count


def local_dir(spec: TaskSpec, data_dir: str | Path | None) -> Path | None:
    """The directory holding the task's local files, if it exists."""
    if spec.local is None:
        return None
    p = Path(spec.local)
    if not p.is_absolute():
        if data_dir is None:
            return None
        p = Path(data_dir) / "tasks" / spec.local
    return p if p.is_dir() else None


def _split_file(d: Path, split: str) -> Path | None:
    for ext in EXTENSIONS:
        if (d / f"{split}{ext}").is_file():
            return d / f"{split}{ext}"
    return None


def local_splits(spec: TaskSpec, data_dir: str | Path | None) -> list[str]:
    d = local_dir(spec, data_dir)
    return [] if d is None else [s for s in SPLITS if _split_file(d, s) is not None]


def available_splits(spec: TaskSpec, data_dir: str | Path | None) -> list[str]:
    """Local splits when the task is on disk, else the hub's declared splits."""
    local = local_splits(spec, data_dir)
    if local:
        return local
    return [s for s in SPLITS if spec.hub is not None and s in spec.hub.splits]


def load_rows(spec: TaskSpec, split: str, data_dir: str | Path | None = None) -> Rows:
    """Validated rows of one split; local files first, the hub otherwise."""
    key = (spec.name, spec.origin, spec.local, split, str(Path(data_dir).resolve()) if data_dir else None)
    if key not in _CACHE:
        _CACHE[key] = _load_rows(spec, split, key[-1])
    return _CACHE[key]


_CACHE: dict[tuple, Rows] = {}


def _load_rows(spec: TaskSpec, split: str, data_dir: str | None) -> Rows:
    d = local_dir(spec, data_dir)
    if d is not None:
        path = _split_file(d, split)
        if path is None:
            raise TaskError(f"task {spec.name!r}: no {split} split in {d} (looked for {split}{{{','.join(EXTENSIONS)}}})")
        raw = _read_file(path)
        sha = file_sha256(path)
        return _validate(spec, split, raw, str(path), sha)
    if spec.hub is None:
        where = f"{data_dir}/tasks/{spec.local}" if spec.local and data_dir else "no --data-dir given"
        raise TaskError(f"task {spec.name!r} is not available locally ({where}) and its spec ({spec.origin}) has no hub source")
    raw, source, unmapped = _read_hub(spec, split)
    rows = _validate(spec, split, raw, source, "")
    if unmapped:
        rows.skipped["label without a mapping (label_values)"] = unmapped
    return rows


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (None: it answered, or offline mode is set and the
    libraries' own cache decides). Checked once, with a 10-second timeout, before any hub load: the hub
    client would otherwise retry for many minutes before saying anything."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return None
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as e:
        return f"{url} is unreachable ({getattr(e, 'reason', e)})"
    return None


def _read_file(path: Path) -> list[tuple[str, dict]]:
    """(location, raw row) pairs; location is "file:line" for messages."""
    out = []
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
                if not isinstance(row, dict):
                    raise TaskError(f"{path}:{i}: each line must be a JSON object, got {type(row).__name__}")
                out.append((f"{path}:{i}", row))
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f), 2):
                out.append((f"{path}:{i}", row))
    else:
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            out.append((f"{path}:row {i}", row))
    return out


def _read_hub(spec: TaskSpec, split: str) -> tuple[list[tuple[str, dict]], str]:
    hub = spec.hub
    if split not in hub.splits:
        raise TaskError(f"task {spec.name!r}: the hub source declares no {split} split ({spec.origin})")
    import datasets

    why = hub_unreachable()
    if why:
        raise TaskError(f"task {spec.name!r} has no local copy and the Hugging Face hub {why}; pass --data-dir PATH "
                        "with local copies of the tasks (tasks/<name>/task.json + <split>.jsonl, see the README)")
    try:
        extra = {"revision": hub.revision} if hub.revision else {}
        ds = datasets.load_dataset(hub.path, hub.name, split=hub.splits[split], **extra)
    except Exception as e:  # network, auth, missing config: all end here
        raise TaskError(
            f"task {spec.name!r}: cannot load {hub.path} ({hub.name}) split {hub.splits[split]} from the hub: {e}. "
            "Offline? Pass --data-dir with local copies of the tasks."
        ) from None
    fields_ = hub.input_fields or list(spec.input_fields)
    values = {str(k): v for k, v in hub.label_values.items()}
    rows, unmapped = [], 0
    for i, r in enumerate(ds):
        r = {hub.columns.get(k, k): v for k, v in r.items()}
        label = r.get(hub.label_column)
        label = values.get(str(label), label if not values else None)
        if label is None:  # unlabelled rows (e.g. -1 in SNLI, 0 in RAFT's test split): counted
            unmapped += 1
            continue
        row = {f: r.get(f) for f in fields_}
        row.update({f: "" for f in spec.input_fields if f not in fields_})
        row[spec.label_field] = label
        rows.append((f"{hub.path}:{hub.splits[split]}:{i}", row))
    if split == "train":  # a mapping that loses a whole class would silently change the task
        lost = sorted(set(spec.labels) - {row[spec.label_field] for _, row in rows})
        if lost:
            raise TaskError(f"task {spec.name!r}: no {hub.path} {hub.splits[split]} row maps to label(s) {lost}; "
                            f"check label_column/label_values in {spec.origin}")
    return rows, f"hf://{hub.path}/{hub.name or ''}@{hub.revision + ':' if hub.revision else ''}{getattr(ds, '_fingerprint', '')}", unmapped


def _validate(spec: TaskSpec, split: str, raw: list[tuple[str, dict]], source: str, sha: str) -> Rows:
    labels = set(spec.labels)
    rows, skipped = [], {}
    for where, r in raw:
        missing = [f for f in spec.input_fields if f not in r]
        if missing or spec.label_field not in r:
            need = missing + ([spec.label_field] if spec.label_field not in r else [])
            raise TaskError(f"{where}: missing field(s) {need} (task {spec.name!r} from {spec.origin})")
        label = r[spec.label_field]
        if label not in labels:
            raise TaskError(
                f"{where}: label {label!r} is not one of the task's labels {list(spec.labels)} "
                f"(fix the data or the 'labels' field of {spec.origin})"
            )
        row = {f: "" if r[f] is None else str(r[f]).strip() for f in spec.input_fields}
        if not any(row.values()):
            skipped["empty input"] = skipped.get("empty input", 0) + 1
            continue
        row["label"] = label
        rows.append(row)
    if not rows:
        raise TaskError(f"task {spec.name!r}: split {split} of {source} has no usable rows")
    return Rows(spec.name, split, rows, source, sha, skipped)
