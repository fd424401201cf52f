"""A `symtune run` configuration: the run's identity (out, model, data, seed) and its three sections.

The sections are kept as written — `mixture:`, `tune:` (with `preset` and `launch`) and `eval:` (with
`launch`) — because that is what `config.yaml` echoes and what the tuning stage key hashes (the preset by
name, the options given over it). Every reader takes them resolved into their own types through the
methods below (`MixtureConfig`, `TuneConfig`, `EvalConfig`), and `load_run_config` resolves them all once
before any stage runs, so a typo or a bad value in any section is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .configs import config_file, launch_args, read_yaml_mapping, unknown_names

if TYPE_CHECKING:
    from .evaluate import EvalConfig
    from .mixture import MixtureConfig
    from .tune.config import TuneConfig

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "runs" / "default.yaml"


class PipelineError(ValueError):
    """A run configuration or run directory that cannot be used."""


@dataclass
class RunConfig:
    """One end-to-end run. `mixture`, `tune` and `eval` hold the options of MixtureConfig, of tune() (with
    `preset`) and of EvalConfig; `out` is the run directory, `model` the base model, `data_dir` the local
    data (None: the hub). `stages_dir` (default `<out>/stages`) may be shared by several runs: a stage with
    the same key is then done once for all of them (a study's mixture and base-model evaluation)."""

    out: str = "runs/default"
    model: str = "smollm2-135m"
    data_dir: str | None = None
    seed: int = 0
    mixture: dict = field(default_factory=dict)
    tune: dict = field(default_factory=lambda: {"preset": "cpu-small"})
    eval: dict = field(default_factory=dict)
    stages_dir: str | None = None

    def mixture_config(self) -> MixtureConfig:
        from .mixture import MixtureConfig

        return MixtureConfig(data_dir=self.data_dir, seed=self.seed, **self.mixture)

    def tune_options(self) -> dict:
        """The tune section without `launch` (how many processes does not change the result): the options
        given to tune(), `preset` among them."""
        return {k: v for k, v in self.tune.items() if k != "launch"}

    def tune_config(self) -> TuneConfig:
        """The tune section resolved (defaults < preset < options)."""
        from .tune.config import resolve_config

        opts = self.tune_options()
        return resolve_config(opts.pop("preset", "cpu-small"), **opts)

    def eval_config(self, model: str | None = None, out: str | Path = ".") -> EvalConfig:
        """The eval section as the evaluation of `model` (default: the base model) into `out`."""
        from .evaluate import EvalConfig

        opts = {"seed": self.seed, **{k: v for k, v in self.eval.items() if k != "launch"}}
        return EvalConfig(model=model or self.model, out=str(out), data_dir=self.data_dir, **opts)

    @property
    def tune_launch(self):
        """`accelerate launch` arguments (or a shipped config's name) for tuning; None: in this process."""
        return self.tune.get("launch")

    @property
    def eval_launch(self):
        """The same for the evaluations (their numbers are those of one process)."""
        return self.eval.get("launch")


def load_run_config(path: str | Path | None = None, **overrides) -> RunConfig:
    path = config_file(path) if path else DEFAULT_CONFIG
    raw = read_yaml_mapping(path, "run config", PipelineError)
    known = set(RunConfig.__dataclass_fields__)
    bad = sorted(set(raw) - known)
    if bad:
        raise PipelineError(f"{path}: unknown field(s) {bad}; known: {sorted(known)}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    config = RunConfig(**raw)
    check_sections(config, str(path))
    return config


def _unknown(section: str, given: dict, known, where: str) -> None:
    bad = unknown_names(given, known)
    if bad:
        raise PipelineError(f"{where}: unknown option(s) in {section}: {', '.join(bad)}")


def check_sections(config: RunConfig, where: str = "run config") -> None:
    """Every section is checked before any stage runs: unknown options (with a did-you-mean) and bad values
    are errors naming the section."""
    from .evaluate import EvalConfig
    from .mixture import MixtureConfig
    from .tune.config import FIELD_NAMES

    for name in ("mixture", "tune", "eval"):
        if not isinstance(getattr(config, name), dict):
            raise PipelineError(f"{where}: {name} must be a mapping of options, got {getattr(config, name)!r}")
    _unknown("mixture", config.mixture, set(MixtureConfig.__dataclass_fields__) - {"data_dir", "seed"}, where)
    _unknown("tune", config.tune, set(FIELD_NAMES) - {"model", "mixture", "out", "seed"} | {"preset", "launch"}, where)
    _unknown("eval", config.eval, set(EvalConfig.__dataclass_fields__) - {"model", "out", "data_dir", "seed"} | {"launch"},
             where)
    try:
        for launch in (config.tune_launch, config.eval_launch):
            if launch is not None:
                launch_args(launch)
        config.mixture_config()
        config.tune_config()
        config.eval_config()
    except (TypeError, ValueError) as e:
        raise PipelineError(f"{where}: {e}") from None
