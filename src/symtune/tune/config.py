"""The tuning configuration: one dataclass, mirrored by the YAML presets in `symtune/configs/presets/`.

Resolution order: the dataclass defaults, then the preset, then explicit overrides (keyword arguments of
`tune()` or CLI flags). The resolved config is written to `<out>/tune_config.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..configs import read_yaml_mapping, unknown_names
from ..flags import option

PRESETS = ("cpu-small", "cpu-study", "paper")
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
PRECISIONS = ("auto", "fp32", "bf16-mixed", "bf16")


class TuneError(ValueError):
    """A tuning run that cannot start or continue as asked; the message says what to do."""



@dataclass
class TuneConfig:
    """Everything that decides a tuning run. Field help texts are the documentation."""

    model: str = option("", "base model: alias (smollm2-135m), hub id, local directory or .gguf file")
    mixture: str = option("", "mixture directory written by `symtune mixture` (manifest.json, records.jsonl, dataset/)")
    out: str = option("", "output directory (model or adapter, merged model, logs, checkpoints, model card)")
    preset: str | None = option(None, "preset the values came from (cpu-small, paper or a YAML path)")
    seed: int = option(0, "seed for data order, LoRA init and dropout")

    # optimisation
    optimizer: str = option("adamw", "optimizer for full fine-tuning: adamw or adafactor", choices=OPTIMIZERS)
    learning_rate: float = option(2e-5, "peak learning rate for full fine-tuning")
    lr_scheduler: str = option("constant_with_warmup", "learning-rate schedule", choices=SCHEDULERS)
    warmup_steps: int = option(5, "linear warm-up steps")
    weight_decay: float = option(0.0, "decoupled weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)")
    max_steps: int = option(40, "optimizer steps; the mixture is repeated if it runs out")
    batch_size: int = option(4, "sequences per optimizer step over all processes (packed sequences when packing)")
    micro_batch_size: int = option(1, "sequences per forward pass on one process; the rest is gradient accumulation")

    # lengths and packing
    max_input_tokens: int = option(2048, "prompts longer than this (in tokens) are dropped and counted")
    max_target_tokens: int = option(512, "targets longer than this (EOS included) are dropped and counted")
    packing: bool = option(True, "pack several examples into one sequence, without attention across them")
    pack_length: int | None = option(None, "tokens per packed sequence (default: max_input_tokens + max_target_tokens)")
    max_examples: int | None = option(None, "use only the first N records of the mixture (quick runs, benchmarks)")

    # LoRA
    lora: bool = option(False, "train a LoRA adapter instead of all weights")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_target_modules: list[str] = option(["all-linear"], "modules that get adapters ('all-linear' or names like q_proj)")
    lora_optimizer: str = option("adamw", "optimizer used instead of `optimizer` when lora is on", choices=OPTIMIZERS)
    lora_learning_rate: float = option(2e-4, "learning rate used instead of `learning_rate` when lora is on")
    merge_lora: bool = option(True, "also write the base model with the adapter merged in (loadable without peft)")

    # precision and speed
    precision: str = option("auto", "auto (bf16-mixed on GPUs that support it, else fp32), fp32, bf16-mixed, bf16",
                        choices=PRECISIONS)
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory, ~30% slower)")
    attn_implementation: str | None = option(None, "attention kernel (sdpa, eager, flash_attention_2, ...); None: sdpa")
    dataloader_workers: int = option(0, "data loader worker processes")

    # checkpoints, logs, evaluation
    save_steps: int = option(20, "write a checkpoint every N steps (0: only the final model)")
    save_total_limit: int = option(2, "keep at most this many checkpoints")
    keep_checkpoints: bool = option(True, "keep checkpoints after a successful run (to train on with --resume and more steps)")
    logging_steps: int = option(1, "log loss and throughput every N steps")
    eval_every: int = option(0, "evaluate in-context learning every N steps (0: off); a small fixed slice, see eval_*")
    eval_data_dir: str | None = option(None, "data directory of the evaluation tasks for the hook (None: the hub)")
    eval_tasks: list[str] | None = option(None, "evaluation tasks for the hook (None: the paper's 11 held-out tasks)")
    eval_settings: list[str] = option(["symbol", "flipped"], "settings for the hook: held-out symbols, flipped labels")
    eval_limit: int = option(8, "queries per task and setting for the hook (the same ones at every call)")
    report_to: list[str] = option(["none"], "extra trainer loggers: tensorboard, wandb, ... (the JSONL log is always written)")
    time_limit_minutes: float | None = option(None, "stop (and save) after this many minutes of training (0 or None: no limit)")
    eos_token: str | None = option(None, "EOS token to append to targets when the tokenizer has none (must be in vocab)")
    trust_remote_code: bool = option(False, "allow model code from the hub")

    def __post_init__(self):
        problems = []
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                problems.append(f"{f.name}={getattr(self, f.name)!r} is not one of {', '.join(choices)}")
        positive = ("max_steps", "batch_size", "micro_batch_size", "max_input_tokens", "max_target_tokens", "lora_r",
                    "lora_alpha", "logging_steps", "save_total_limit", "eval_limit")
        problems += [f"{n} must be >= 1, got {getattr(self, n)}" for n in positive if getattr(self, n) < 1]
        nonneg = ("warmup_steps", "weight_decay", "max_grad_norm", "save_steps", "eval_every", "dataloader_workers")
        problems += [f"{n} must be >= 0, got {getattr(self, n)}" for n in nonneg if getattr(self, n) < 0]
        if self.learning_rate <= 0 or self.lora_learning_rate <= 0:
            problems.append("learning rates must be > 0")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.batch_size % self.micro_batch_size:
            problems.append(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                            f"({self.micro_batch_size})")
        if self.pack_length is not None and self.pack_length < 16:
            problems.append(f"pack_length must be >= 16, got {self.pack_length}")
        if self.max_examples is not None and self.max_examples < 1:
            problems.append(f"max_examples must be >= 1, got {self.max_examples}")
        if self.time_limit_minutes is not None and self.time_limit_minutes < 0:
            problems.append(f"time_limit_minutes must be >= 0, got {self.time_limit_minutes}")
        if problems:
            raise TuneError("invalid tuning config: " + "; ".join(problems))

    @property
    def sequence_length(self) -> int:
        """Longest training sequence: the pack length, or the longest example allowed."""
        return self.pack_length or self.max_input_tokens + self.max_target_tokens

    @property
    def effective_optimizer(self) -> str:
        return self.lora_optimizer if self.lora else self.optimizer

    @property
    def effective_learning_rate(self) -> float:
        return self.lora_learning_rate if self.lora else self.learning_rate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(TuneConfig))


def preset_path(preset: str) -> Path:
    """A preset name (cpu-small, paper) or a path to a YAML file."""
    if preset in PRESETS:
        return Path(str(resources.files("symtune") / "configs" / "presets" / f"{preset}.yaml"))
    p = Path(preset).expanduser()
    if not p.is_file():
        raise TuneError(f"preset {preset!r} is neither one of {', '.join(PRESETS)} nor an existing YAML file")
    return p


def load_preset(preset: str) -> dict[str, Any]:
    path = preset_path(preset)
    values = read_yaml_mapping(path, "tuning preset", TuneError)
    _check_names(values, f"preset {str(path)!r}")
    return values


def _check_names(values: dict, where: str) -> None:
    unknown = unknown_names(values, FIELD_NAMES)
    if unknown:
        raise TuneError(f"unknown tuning option(s) in {where}: {', '.join(unknown)}")


def resolve_config(preset: str | None = "cpu-small", **overrides) -> TuneConfig:
    """Defaults < preset < overrides (None values in overrides mean "not given")."""
    _check_names(overrides, "the arguments")
    values = load_preset(preset) if preset else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["preset"] = preset
    return TuneConfig(**values)


def save_config(config: TuneConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
