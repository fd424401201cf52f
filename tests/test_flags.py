"""The mixture, eval, export and tune flags are generated from their config dataclasses: one default per option
(the dataclass's), every field a flag with help, `none` for an optional value, and a clear error for a bad one."""

from dataclasses import fields

import pytest

from symtune.cli import EXPORT_OPTIONS, build_parser
from symtune.evaluate import EvalConfig
from symtune.flags import given_options
from symtune.mixture import MixtureConfig
from symtune.tune.config import TuneConfig

COMMANDS = {  # command, its config class, the fields it exposes, the arguments it needs
    "mixture": (MixtureConfig, None, ["--out", "m"]),
    "eval": (EvalConfig, None, []),
    "export": (EvalConfig, EXPORT_OPTIONS, ["lm-eval", "--out", "x"]),
    "tune": (TuneConfig, None, ["--model", "m", "--mixture", "x", "--out", "o"]),
}


def _subparser(command):
    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == command)[1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_a_flag_with_help_and_nothing_given_means_the_dataclass_defaults(command):
    cls, only, needed = COMMANDS[command]
    args = build_parser().parse_args([command, *needed])
    given = given_options(args, cls, only=only)
    assert set(given) <= {"model", "mixture", "out", "preset"}  # only what the command requires (tune: its preset)
    dests = {a.dest: a for a in _subparser(command)._actions}
    for f in fields(cls):
        if f.type == "dict" or (only is not None and f.name not in only) or f.name in ("preset",):
            continue
        if command == "eval" and f.name == "out":
            continue  # eval's default output directory is named after the model
        assert f.name in dests, (command, f.name)
        assert dests[f.name].help, (command, f.name)


def test_optional_values_take_none_and_renamed_and_boolean_flags_reach_their_fields():
    args = build_parser().parse_args(["mixture", "--out", "m", "--max-tokens", "none", "--tokenizer", "none",
                                      "--k-max", "3", "--exclude-tasks", "a", "b"])
    config = MixtureConfig(**given_options(args, MixtureConfig))
    assert (config.max_tokens, config.tokenizer, config.k_max, config.exclude_tasks) == (None, None, 3, ["a", "b"])
    assert config.k_min == MixtureConfig.k_min and config.max_per_task == MixtureConfig.max_per_task
    args = build_parser().parse_args(["eval", "--format", "flipped_colon", "--no-generate", "--limit", "2"])
    assert given_options(args, EvalConfig) == {"fmt": "flipped_colon", "generate": False, "limit": 2}


@pytest.mark.parametrize("argv, needle", [
    (["mixture", "--out", "m", "--max-tokens", "lots"], "argument --max-tokens: --max-tokens takes an int or none, got 'lots'"),
    (["eval", "--k", "four"], "argument --k: --k takes an int, got 'four'"),
    (["eval", "--suite", "nosuch"], "argument --suite: invalid choice: 'nosuch'"),
    (["tune", "--model", "m", "--mixture", "x", "--out", "o", "--learning-rate", "fast"], "--learning-rate takes a float"),
    (["tune", "--model", "m", "--mixture", "x", "--out", "o", "--pack-length", "none"], "--pack-length takes an int, got 'none'"),
])  # fmt: skip
def test_a_bad_flag_value_is_one_clear_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith(f"symtune {argv[0]}: error: ") and needle in err[-1], err
