"""PEFT adapters on a base model: their config, a check that their LoRA shapes fit the base model's layers (a
wrong base model is a clear error, not a PEFT traceback), and attaching them for evaluation."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .models import ModelLoadError, ModelRef

log = logging.getLogger(__name__)


def adapter_config(d: Path) -> dict:
    try:
        return json.loads((Path(d) / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read adapter_config.json in {str(d)!r}: {e}") from e


def apply_adapter(model, ref: ModelRef, adapter: str):
    """Attach a PEFT adapter after checking that its modules and shapes fit this base model."""
    from peft import PeftModel

    cfg = adapter_config(Path(adapter))
    base = cfg.get("base_model_name_or_path")
    if base and Path(base).name.lower() not in (Path(ref.path).name.lower(), Path(ref.name).name.lower()):
        log.warning("adapter %s was trained on %r; loading it on %r", adapter, base, ref.name)
    problems = adapter_shape_problems(model, Path(adapter))
    if problems:
        raise ModelLoadError(f"adapter {adapter!r} does not fit base model {ref.name!r} (it was trained on "
                             f"{base!r}): " + "; ".join(problems[:3])
                             + ("; ..." if len(problems) > 3 else "") + ". Pass the base model it was trained on.")
    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelLoadError(f"adapter {adapter!r} does not fit base model {ref.name!r} (trained on {base!r}): "
                             f"{str(e).splitlines()[0]}") from e
    return model


def adapter_shape_problems(model, adapter: Path) -> list[str]:
    """Compare LoRA weight shapes in the adapter file against the base model's linear layers."""
    f = adapter / "adapter_model.safetensors"
    if not f.is_file():
        return []  # .bin adapters: let PEFT's own checks speak
    from safetensors import safe_open

    modules = dict(model.named_modules())
    problems = []
    with safe_open(str(f), framework="pt") as sf:
        for key in sf.keys():
            m = re.match(r"^base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
            if not m:
                continue
            mod_name, ab = m.groups()
            mod = modules.get(mod_name)
            if mod is None:
                problems.append(f"module {mod_name} not in the base model")
                continue
            shape = sf.get_slice(key).get_shape()
            in_f, out_f = getattr(mod, "in_features", None), getattr(mod, "out_features", None)
            if ab == "A" and in_f is not None and shape[1] != in_f:
                problems.append(f"{mod_name}: lora_A expects {shape[1]} inputs, base has {in_f}")
            if ab == "B" and out_f is not None and shape[0] != out_f:
                problems.append(f"{mod_name}: lora_B gives {shape[0]} outputs, base has {out_f}")
    return problems
