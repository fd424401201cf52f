"""Symbol tuning on TRL's SFTTrainer: `tune()` (recipe.py), its config (config.py), data and packing (data.py),
the target-only LM head (head.py), the trainer and callbacks (trainer.py), outputs (outputs.py), CLI (cli.py)."""

from .cli import add_tune_parser, eval_hook, run_tune
from .config import PRESETS, TuneConfig, TuneError, load_preset, resolve_config
from .recipe import run, tune

__all__ = ["PRESETS", "TuneConfig", "TuneError", "add_tune_parser", "eval_hook", "load_preset", "resolve_config",
           "run", "run_tune", "tune"]
