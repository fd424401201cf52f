"""The task catalogue: the built-in specs, the tasks found in a data directory, and users' own spec files."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

from .sources import available_splits, local_splits
from .spec import TaskError, TaskSpec, read_spec_file

BUILTIN_DIR = Path(__file__).parent / "specs"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
SPECS_ENV = "SYMTUNE_TASKS"  # extra spec files or directories, os.pathsep-separated


def _spec_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES)
    raise TaskError(f"task spec path {path} does not exist")


def load_catalogue(data_dir: str | Path | None = None, spec_paths: Iterable[str | Path] = ()) -> dict[str, TaskSpec]:
    """All known tasks by name.

    Built-in specs come first; a data directory's tasks/<name>/task.json adds tasks (and must agree with a
    built-in spec of the same name on labels and inputs); spec files given here or in $SYMTUNE_TASKS
    (a file or a directory of .yaml/.json specs) add or replace tasks.
    """
    catalogue = {}
    for p in _spec_files(BUILTIN_DIR):
        spec = read_spec_file(p)
        catalogue[spec.name] = spec
    if data_dir is not None:
        tasks_dir = Path(data_dir) / "tasks"
        if not Path(data_dir).is_dir():
            raise TaskError(f"--data-dir {data_dir} is not a directory")
        for p in sorted(tasks_dir.glob("*/task.json")) if tasks_dir.is_dir() else []:
            local = read_spec_file(p)
            known = catalogue.get(local.name)
            if known is None:
                catalogue[local.name] = local
            elif (known.labels, known.input_fields) != (local.labels, local.input_fields):
                raise TaskError(
                    f"{p}: labels/input_fields {list(local.labels)}/{list(local.input_fields)} disagree with the "
                    f"built-in spec of {local.name!r} ({list(known.labels)}/{list(known.input_fields)}); "
                    "rename the task or make them agree"
                )
    extra = [Path(x) for x in spec_paths]
    extra += [Path(x) for x in os.environ.get(SPECS_ENV, "").split(os.pathsep) if x]
    for path in extra:
        for p in _spec_files(path):
            spec = read_spec_file(p)
            catalogue[spec.name] = spec
    return dict(sorted(catalogue.items()))


def get_task(catalogue: dict[str, TaskSpec], name: str) -> TaskSpec:
    try:
        return catalogue[name]
    except KeyError:
        near = difflib.get_close_matches(name, catalogue, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else "; `symtune tasks` lists them"
        raise TaskError(f"unknown task {name!r}{hint}") from None


def is_local(spec: TaskSpec, data_dir: str | Path | None) -> bool:
    return bool(local_splits(spec, data_dir))


def select_tasks(
    catalogue: dict[str, TaskSpec],
    names: Iterable[str] | None = None,
    role: str | None = None,
    data_dir: str | Path | None = None,
    paper_only: bool = False,
    require_available: bool = True,
) -> list[TaskSpec]:
    """Tasks by name (in the order given), or every task of a role; unavailable ones are an error when named
    and left out when implied by the role."""
    if names:
        specs = [get_task(catalogue, n) for n in names]
        if require_available:
            for s in specs:
                if not available_splits(s, data_dir):
                    raise TaskError(f"task {s.name!r} has no local data under {data_dir} and no hub source")
        return specs
    specs = [s for s in catalogue.values() if (role is None or s.role == role) and (s.paper or not paper_only)]
    if require_available:
        specs = [s for s in specs if is_local(s, data_dir) or (data_dir is None and s.hub is not None)]
    return specs
