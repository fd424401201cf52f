"""The package's modules import one way: no cycle among them, counting imports inside functions too.

An import inside a function hides a cycle from Python but not from a reader. The stages stack up in the
pipeline's order, symbols → tasks → episodes/formats → mixture → tune → scoring/planning/runner →
evaluate → report, under the runs that chain them (pipeline, study) and the CLI on top, with the shared
pieces (files, flags, results, metrics, tables, figures, accelerator, ...) beneath them all; that holds only
if every import, at any depth, points down.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

import symtune

SRC = Path(symtune.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ("symtune", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported(name: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The package's modules that module `name` (its text: `source`) imports, anywhere in it (functions included)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer is inside them.
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in known and not (name == prefix or name.startswith(prefix + ".")):
                found.add(prefix)

    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("symtune."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "symtune" or node.module.startswith("symtune.")):
                origin = node.module
            else:
                continue
            add(origin)
            for alias in node.names:  # `from . import x` where x is a submodule imports that module
                if f"{origin}.{alias.name}" in known:
                    add(f"{origin}.{alias.name}")
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path.read_text(), set(mods), path.name == "__init__.py") for name, path in mods.items()}


def import_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """The shortest chain of imports from `start` to `goal`, or None."""
    prev: dict[str, str] = {start: start}
    frontier = [start]
    while frontier and goal not in prev:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] - prev.keys()):
                prev[w] = v
                nxt.append(w)
        frontier = nxt
    if goal not in prev:
        return None
    path = [goal]
    while path[-1] != start:
        path.append(prev[path[-1]])
    return path[::-1]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle of imports through each module that is on one, each cycle once."""
    cycles: set[tuple[str, ...]] = set()
    for start in sorted(graph):
        back = [[start, *path] for w in sorted(graph[start]) if (path := import_path(graph, w, start))]
        if back:
            ring = min(back, key=len)[:-1]
            first = ring.index(min(ring))  # one rotation per cycle, so repeats collapse
            ring = ring[first:] + ring[:first]
            cycles.add((*ring, ring[0]))
    return sorted(list(c) for c in cycles)


def test_graph_sees_imports():
    graph = import_graph()
    assert "symtune.evaluate" in graph["symtune.cli"]  # inside a function
    assert "symtune.tasks.sources" in graph["symtune.tasks.catalogue"]  # relative, top level
    assert "symtune.tasks" in graph["symtune.episodes"]  # a package's __init__
    assert "symtune.scoring" in graph["symtune.evaluate"]


def test_imports_are_resolved_in_every_form():
    known = {"symtune", "symtune.a", "symtune.b", "symtune.e", "symtune.pkg", "symtune.pkg.c", "symtune.pkg.d",
             "symtune.pkg2", "symtune.pkg2.h"}
    source = """
import json
import symtune.a
from symtune import b
from . import d, CONSTANT
from .. import __version__
from .d import thing


def f():
    from ..e import g
    import symtune.pkg2.h
"""
    # module symtune.pkg.c: its own package's __init__ is not an edge (it is being imported already), the root's neither
    assert imported("symtune.pkg.c", source, known) == {"symtune.a", "symtune.b", "symtune.pkg.d", "symtune.e",
                                                        "symtune.pkg2", "symtune.pkg2.h"}
    # a package's __init__ resolves `.` to itself; importing a submodule elsewhere runs that package's __init__
    assert imported("symtune.pkg", "from . import c\nfrom .c import x\n", known, is_package=True) == {"symtune.pkg.c"}
    assert imported("symtune.a", "from .pkg import CONSTANT\n", known) == {"symtune.pkg"}


def test_find_cycles_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("lower, higher", [
    ("symtune.tune.recipe", "symtune.evaluate"),  # the in-training evaluation is handed to tune() by its callers
    ("symtune.tune.recipe", "symtune.report"),  # the loss curve is drawn with symtune.figures
    ("symtune.runner", "symtune.tune"),  # launch checks live in accelerator.py
    ("symtune.planning", "symtune.evaluate"),  # EvalConfig lives in planning.py
    ("symtune.instructions", "symtune.mixture"),
    ("symtune.report.study", "symtune.study"),  # the study hands its report the validation scores
])
def test_lower_modules_do_not_reach_higher_ones(lower, higher):
    """Not cycles today, but the direction each cycle was broken in: the cycle test alone would let the import
    come back the other way round."""
    path = import_path(import_graph(), lower, higher)
    assert path is None, " → ".join(path)
