"""What a finished run leaves behind: weights, loss curve, model card, summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from ..figures import loss_figure

log = logging.getLogger(__name__)


def save_weights(trainer, tokenizer, out: Path, *, lora: bool, merge: bool, base_model: str) -> dict:
    """Full tuning: the model in `out/`. LoRA: the adapter in `out/adapter/` and, if `merge`, the merged model in
    `out/` (so `symtune.models.load_model(out)` loads the tuned model either way). Returns the paths written."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    written = {}
    if not lora:
        _restore_for_inference(model)
        trainer.save_model(str(out))  # handles DDP / FSDP / DeepSpeed gathering; writes the tokenizer too
        written["model"] = str(out)
        return written
    _restore_for_inference(model)
    trainer.save_model(str(out / "adapter"))
    written["adapter"] = str(out / "adapter")
    if merge and trainer.accelerator.is_main_process:
        if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            from symtune.models import load_model  # sharded weights: merge into a fresh copy of the base

            merged_src, _ = load_model(base_model, adapter=str(out / "adapter"))
        else:
            merged_src = model
        merged = merged_src.merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
        written["merged_model"] = str(out)
    trainer.accelerator.wait_for_everyone()
    return written


def _restore_for_inference(model) -> None:
    config = model.config.get_text_config() if hasattr(model, "config") else None
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = True  # training turns the KV cache off; the saved model should generate normally


def plot_loss(log_history: list[dict], path: Path, title: str) -> bool:
    """Loss per step (and the evaluation hook's numbers, if any) as a PNG: the report's own loss figure."""
    return loss_figure(path, log_history, title) is not None


def model_card(config: dict, summary: dict, identity: dict, mixture_manifest: dict, mixture_hash: str) -> str:
    lora = config["lora"]
    res = summary["results"]
    data = summary["data"]
    lines = [
        "---",
        "library_name: transformers" if not lora else "library_name: peft",
        "tags: [symtune, symbol-tuning, in-context-learning]",
        "---",
        "",
        f"# Symbol-tuned {config['model']}",
        "",
        "Fine-tuned with symtune by symbol tuning (Wei et al., 2023, arXiv 2305.08298):",
        "few-shot classification prompts without instructions, natural labels replaced by arbitrary symbols.",
        "",
        "## Base model",
        f"- name: `{config['model']}`",
        f"- resolved: `{identity.get('path')}`" + (f" / `{identity.get('gguf_file')}`" if identity.get("gguf_file") else ""),
        "- weight files (sha256): " + (", ".join(f"`{k}` {v[:16]}…" for k, v in (identity.get("files") or {}).items()) or "n/a"),
        "",
        "## Mixture",
        f"- directory: `{config['mixture']}`",
        f"- records.jsonl sha256: `{mixture_hash}`",
        f"- records: {mixture_manifest.get('total')} in the mixture; {data['examples']} trained "
        f"({data['dropped_total']} dropped over the length limits: {data['dropped'] or 'none'})",
        f"- tasks: {len(mixture_manifest.get('counts') or {})}",
        "",
        "## Training",
        (f"- LoRA (r={config['lora_r']}, alpha={config['lora_alpha']}, modules {config['lora_target_modules']}), "
         f"merged copy: {'yes' if config['merge_lora'] else 'no'}") if lora else "- full fine-tuning",
        f"- optimizer {summary['optimizer']}, learning rate {summary['learning_rate']}, schedule {config['lr_scheduler']}",
        f"- {res['steps']} steps of {config['batch_size']} {'packed sequences' if summary['packing']['enabled'] else 'examples'} "
        f"({summary['processes']} process(es)), sequence length {summary['sequence_length']}",
        f"- packing: {summary['packing']['mode']}",
        f"- precision: {summary['precision']}; loss on target tokens (+EOS) only",
        "",
        "## Results",
        f"- final loss (last logged step): {res['final_loss']:.4f}" if res.get("final_loss") is not None else "- final loss: n/a",
        f"- mean training loss: {res['train_loss']:.4f}" if res.get("train_loss") is not None else "",
        f"- tokens trained: {res['tokens']} ({res['target_tokens']} target tokens) in {res['train_seconds']:.0f} s "
        f"({res['tokens_per_s']:.0f} tokens/s)",
    ]
    if res.get("last_eval"):
        scores = ", ".join(f"{k[4:]}={v:.4g}" for k, v in res["last_eval"].items() if k.startswith("icl/"))
        lines.append(f"- evaluation hook at step {res['last_eval'].get('step')}: {scores}")
    lines += [
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Use",
        "```python",
        "from symtune.models import load_model",
        f"model, tokenizer = load_model({str(Path(config['out']))!r})",
        "```",
        "",
        "## Config",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(x for x in lines if x is not None) + "\n"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
