"""The configs shipped with symtune, as package data, found by name: presets/ (tune), runs/ (symtune run and
symtune study) and accelerate/ (`accelerate launch --config_file`), so a plain `pip install symtune` can use them."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

import yaml

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


def config_file(path: str | Path, kind: str = "runs") -> Path:
    """A config file's path, or the path of a shipped config of `kind` named so (`symtune run paper`)."""
    if Path(path).is_file():
        return Path(path)
    try:
        return config_path(str(path), kind)
    except ConfigError:
        return Path(path)  # reading it then says that it does not exist


def read_yaml_mapping(path: Path, what: str, error: type[Exception]) -> dict:
    """The mapping a YAML config file holds (empty file: {}); `error` naming the file when it cannot be read
    or holds something else."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise error(f"{path}: cannot read {what}: {e}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: a {what} is a mapping of options, got {type(raw).__name__}")
    return raw


def unknown_names(given, known) -> list[str]:
    """The names in `given` that are not in `known`, each with a did-you-mean where one is close."""
    known = list(known)
    return [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k
            for k in sorted(set(given) - set(known))]


def launch_args(launch) -> list[str]:
    """A run config's tune.launch as `accelerate launch` arguments: a list of them, or the name of a shipped
    accelerate config ("fsdp2"); a `--config_file` value that is not a file but a shipped config's name becomes
    its path."""
    if isinstance(launch, str):
        launch = ["--config_file", launch]
    if not isinstance(launch, list) or not launch:
        raise ConfigError(f"tune.launch must be a shipped accelerate config's name (fsdp2, ddp, ...) or a list of "
                          f"`accelerate launch` arguments, got {launch!r}")
    out = [str(x) for x in launch]
    for i, arg in enumerate(out[:-1]):
        if arg == "--config_file" and not Path(out[i + 1]).is_file():
            try:
                out[i + 1] = str(config_path(out[i + 1], "accelerate"))
            except ConfigError as e:
                raise ConfigError(f"tune.launch: --config_file {out[i + 1]!r} is not a file, and {e}") from None
    return out


__all__ = ["KINDS", "ConfigError", "config_file", "config_path", "launch_args", "read_yaml_mapping", "shipped",
           "unknown_names"]
