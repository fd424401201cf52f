"""The configs shipped with symtune, as package data, found by name: presets/ (tune), runs/ (symtune run and
symtune study) and accelerate/ (`accelerate launch --config_file`), so a plain `pip install symtune` can use them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("presets", "runs", "accelerate")


class ConfigError(ValueError):
    """No shipped config by that name."""


def shipped(kind: str | None = None) -> dict[str, Path]:
    """{"<kind>/<name>": path} of every shipped YAML (of one kind)."""
    root = Path(str(resources.files("symtune") / "configs"))
    return {f"{k}/{p.stem}": p for k in KINDS if kind in (None, k) for p in sorted((root / k).glob("*.yaml"))}


def config_path(name: str, kind: str | None = None) -> Path:
    """A shipped config by "<kind>/<name>" or, when unambiguous, by its bare name (fsdp2, default, cpu-small);
    ValueError naming the choices otherwise."""
    found = shipped(kind)
    if name in found:
        return found[name]
    matches = [p for key, p in found.items() if key.split("/", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    what = f"{kind} config" if kind else "shipped config"
    raise ConfigError(f"no {what} named {name!r}; shipped: {', '.join(found)}")


__all__ = ["KINDS", "ConfigError", "config_path", "shipped"]
