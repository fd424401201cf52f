"""Command-line flags generated from a config dataclass, so a command, its config and the library cannot drift.

Each field of a config dataclass declares its help text (and choices, and a flag name where the field's
name is not the flag's) with `option()`. `add_flags` turns the fields into argparse flags whose default is
"not given"; `given_options` collects what was given, so every default lives in one place: the dataclass.
An optional field takes the word `none` for None (`--max-tokens none`), a bool field `--x/--no-x`.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields


def option(default, help: str, **metadata):
    """A dataclass field with its flag's help text; metadata: `choices`, `flag` (the flag's name)."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def flag_name(f: Field) -> str:
    return "--" + f.metadata.get("flag", f.name).replace("_", "-")


def _default(f: Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


class _GivenNone:
    """`--x none` on the command line: distinct from a flag that was not given (argparse's None)."""

    def __repr__(self) -> str:
        return "none"


GIVEN_NONE = _GivenNone()


def _scalar(base: str, optional: bool, name: str):
    convert = {"int": int, "float": float}.get(base, str)

    def parse(text: str):
        if optional and text.lower() == "none":
            return GIVEN_NONE
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes {'an ' if base == 'int' else 'a '}{base}"
                                             f"{' or none' if optional else ''}, got {text!r}") from None

    parse.__name__ = base  # argparse names the type in its messages
    return parse


def add_flags(parser: argparse.ArgumentParser, cls, *, only=None, skip=(), required=(), defaults: bool = True) -> None:
    """One flag per field of `cls` (restricted to `only`, minus `skip`); dict fields have no flag. defaults:
    show each field's default in its help and let an optional field take `none` (False where defaults come
    from elsewhere first, as tuning's presets)."""
    chosen = [f for f in fields(cls) if (only is None or f.name in only) and f.name not in skip]
    for f in chosen:
        if f.type == "dict" or f.type.startswith("dict["):
            continue
        help_ = f.metadata.get("help", "")
        default = _default(f)
        if defaults and f.name not in required and default not in (None, "", []):
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            help_ += f" (default: {shown})"
        help_ = help_.replace("%", "%%")  # argparse %-formats help
        kw = {"dest": f.name, "help": help_, "choices": f.metadata.get("choices")}
        if not kw["choices"] and f.type != "bool":
            kw["metavar"] = f.metadata.get("flag", f.name).upper()
        if f.name in required:
            parser.add_argument(flag_name(f), required=True, **kw)
            continue
        kw["default"] = None  # not given: the dataclass's default applies
        optional = defaults and f.type.endswith("| None")
        base = f.type.replace(" | None", "")
        if base == "bool":
            parser.add_argument(flag_name(f), action=argparse.BooleanOptionalAction, **kw)
        elif base.startswith("list["):
            item = base[len("list["):-1]
            parser.add_argument(flag_name(f), nargs="+", type=_scalar(item, False, flag_name(f)), **kw)
        else:
            parser.add_argument(flag_name(f), type=_scalar(base, optional, flag_name(f)), **kw)


def given_options(args: argparse.Namespace, cls, *, only=None, skip=()) -> dict:
    """The fields of `cls` whose flag was given on the command line (None for `--x none` included)."""
    out = {}
    for f in fields(cls):
        if (only is not None and f.name not in only) or f.name in skip or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is not None:
            out[f.name] = None if value is GIVEN_NONE else value
    return out
