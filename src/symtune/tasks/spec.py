"""A task is data: a declarative spec (YAML or JSON) naming its labels, inputs, instruction and sources."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

ROLES = ("tune", "eval", "extra")


class TaskError(ValueError):
    """A task spec or task data that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face hub and how its columns map onto the spec."""

    path: str
    name: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train"})  # ours -> hub split
    columns: dict[str, str] = field(default_factory=dict)  # hub column -> input field
    label_column: str = "label"
    label_values: dict[Any, str] = field(default_factory=dict)  # hub label value -> label name
    input_fields: list[str] | None = None  # when the hub has fewer fields than the local copy
    revision: str | None = None  # e.g. "refs/convert/parquet" for repos that still ship a loading script


@dataclass(frozen=True)
class TaskSpec:
    """One classification task.

    name: unique id. role: "tune" (symbol-tuning mixture), "eval" (the paper's held-out suite) or
    "extra" (another held-out task). labels: natural-language label names, in a fixed order (flipping
    swaps the two labels of a binary task). input_fields: row fields that make the input, in order;
    input_template optionally renders them (Python format string over the fields). instruction: used
    in the "with instruction" settings. local: a directory of <split>.jsonl/.csv/.parquet files, either
    absolute, relative to the spec file, or a name under <data-dir>/tasks/. hub: a HubSource.
    """

    name: str
    role: str
    labels: tuple[str, ...]
    input_fields: tuple[str, ...]
    instruction: str = ""
    input_template: str | None = None
    label_field: str = "label"
    task_type: str | None = None
    paper: bool = False
    local: str | None = None
    hub: HubSource | None = None
    origin: str = "<builtin>"  # the file the spec came from, for error messages

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("origin",)}
        d["labels"], d["input_fields"] = list(self.labels), list(self.input_fields)
        d["hub"] = None if self.hub is None else {f.name: getattr(self.hub, f.name) for f in fields(HubSource)}
        return d

    @property
    def content_sha256(self) -> str:
        """sha256 of what the spec says about the task (labels, fields, instruction, template, hub source, role),
        not where it was found (`origin`, `local`: the data's own hashes cover the files). Stage keys and results
        carry it, so that editing a spec redoes what read it."""
        d = {k: v for k, v in self.to_dict().items() if k != "local"}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _require(cond: bool, origin: str, what: str) -> None:
    if not cond:
        raise TaskError(f"{origin}: {what}")


def spec_from_dict(d: dict, origin: str) -> TaskSpec:
    """Validate a raw spec mapping and build a TaskSpec; every problem names the file and field."""
    _require(isinstance(d, dict), origin, "a task spec must be a mapping of fields")
    known = {f.name for f in fields(TaskSpec)} | {"splits", "source", "license", "note"}
    unknown = sorted(set(d) - known)
    _require(not unknown, origin, f"unknown field(s) {unknown}; known fields: {sorted(known - {'origin'})}")
    for key in ("name", "role", "labels", "input_fields"):
        _require(key in d, origin, f"missing required field '{key}'")
    name = d["name"]
    _require(isinstance(name, str) and name.strip() != "", origin, "field 'name' must be a non-empty string")
    _require(d["role"] in ROLES, origin, f"field 'role' is {d['role']!r}; use one of {', '.join(ROLES)}")
    labels = d["labels"]
    _require(
        isinstance(labels, list) and all(isinstance(x, str) and x.strip() for x in labels),
        origin,
        "field 'labels' must be a list of non-empty strings",
    )
    _require(len(labels) >= 2, origin, f"field 'labels' has {len(labels)} label(s); a task needs at least 2 classes")
    dupes = sorted({x for x in labels if [y.strip().lower() for y in labels].count(x.strip().lower()) > 1})
    _require(not dupes, origin, f"field 'labels' repeats {dupes} (labels must differ, ignoring case)")
    inputs = d["input_fields"]
    _require(
        isinstance(inputs, list) and inputs and all(isinstance(x, str) and x for x in inputs),
        origin,
        "field 'input_fields' must be a non-empty list of field names",
    )
    template = d.get("input_template")
    if template is not None:
        try:
            template.format(**{f: "" for f in inputs})
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise TaskError(f"{origin}: field 'input_template' is not a format string over {inputs}: {e}") from None
    hub = d.get("hub")
    if hub is not None:
        _require(isinstance(hub, dict) and "path" in hub, origin, "field 'hub' needs at least 'path'")
        hub_fields = {f.name for f in fields(HubSource)}
        bad = sorted(set(hub) - hub_fields)
        _require(not bad, origin, f"unknown field(s) in 'hub': {bad}; known: {sorted(hub_fields)}")
        values = hub.get("label_values", {})
        missing = sorted(set(values.values()) - set(labels))
        _require(not missing, origin, f"hub.label_values maps to {missing}, which are not in 'labels'")
        hub = HubSource(**hub)
    return TaskSpec(
        name=name,
        role=d["role"],
        labels=tuple(labels),
        input_fields=tuple(inputs),
        instruction=d.get("instruction") or "",
        input_template=template,
        label_field=d.get("label_field", "label"),
        task_type=d.get("task_type"),
        paper=bool(d.get("paper", False)),
        local=d.get("local"),
        hub=hub,
        origin=origin,
    )


def read_spec_file(path: Path) -> TaskSpec:
    """Read a spec from a .yaml/.yml/.json file (a local task.json is a valid spec too)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read task spec: {e}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise TaskError(f"{path}: malformed task spec: {e}") from None
    spec = spec_from_dict(raw, str(path))
    if spec.local is None and path.name == "task.json":
        spec = replace(spec, local=str(path.parent.resolve()))
    elif spec.local is not None and not Path(spec.local).is_absolute() and ("/" in spec.local or spec.local.startswith(".")):
        spec = replace(spec, local=str((path.parent / spec.local).resolve()))
    return spec

