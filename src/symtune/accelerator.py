"""Whether this machine has an accelerator, and whether what `accelerate launch` asked for can run on it.

Checked by tuning (`symtune.tune`) and by evaluation (`runner.processes`) before either starts its processes,
so it lives below both."""

from __future__ import annotations

import os


class LaunchEnvironmentError(ValueError):
    """A launch that asks for GPUs on a machine without any; the message says what to run instead."""


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def check_launch_environment(module: str, error: type[Exception] = LaunchEnvironmentError) -> None:
    """Fail clearly (raising `error`) when `accelerate launch` asked for GPUs (FSDP, DeepSpeed, multi-GPU) on a
    machine without; `module` is what the message suggests running instead."""
    if has_accelerator():
        return
    flag = lambda var: os.environ.get(var, "").lower() in ("1", "true", "yes")  # noqa: E731
    wanted = [name for var, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"))
              if flag(var)]
    if not wanted and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not flag("ACCELERATE_USE_CPU"):
        wanted.append(f"{os.environ['WORLD_SIZE']}-process GPU data parallelism")
    if wanted:
        raise error(
            f"this launch asks for {' and '.join(wanted)}, which needs GPUs, but none is visible. On CPUs, run "
            f"`python -m {module}` directly (one process), or for CPU data parallelism: `ACCELERATE_USE_CPU=1 "
            f"accelerate launch --config_file $(symtune configs cpu_ddp) -m {module} ...`")
