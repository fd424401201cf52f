"""`tune()`: mixture + model -> symbol-tuned model. The whole path of a run, top to bottom.

Longer than our ~300-line guide on purpose, in torchtune's recipe style: reading this file is reading the
run (resolve, load, tokenise and pack, train, save); the pieces it calls live beside it (data, trainer,
outputs, head)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from ..accelerator import check_launch_environment, has_accelerator
from ..models import cpu_has_native_bf16
from ..provenance import package_versions
from .config import TuneConfig, TuneError, resolve_config, save_config
from .data import PackedCollator, check_special_tokens, pack, packing_is_exact, tokenize_records
from .outputs import model_card, plot_loss, save_weights, write_json
from .trainer import EvalHookCallback, JsonlLogCallback, SymtuneTrainer, TimeLimitCallback, last_checkpoint

log = logging.getLogger(__name__)

CONFIG_FILE = "tune_config.yaml"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "tune_summary.json"
# Fields that may change between a run and its resumption.
RESUMABLE_CHANGES = {"out", "preset", "time_limit_minutes", "report_to", "eval_every", "eval_data_dir", "eval_tasks",
                     "eval_settings", "eval_limit", "logging_steps",
                     "dataloader_workers", "save_steps", "save_total_limit", "keep_checkpoints", "max_steps"}


def tune(model: str, mixture: str, out: str, *, preset: str | None = "cpu-small", resume: bool = False,
         overwrite: bool = False, eval_fn: Callable | None = None, callbacks: Sequence = (), **options) -> dict:
    """Symbol-tune `model` on the mixture directory `mixture`, writing everything to `out`.

    `options` are `TuneConfig` fields (see `symtune.tune.TuneConfig` for each one's meaning); they override
    the preset, which overrides the defaults. `resume` continues from the newest complete checkpoint in
    `out/checkpoints`. `eval_fn(model, tokenizer) -> dict` is called every `eval_every` steps and logged;
    `symtune tune` and `symtune run` pass `symtune.evaluate.icl_eval_fn`, a fixed slice of the ICL suite
    configured by the `eval_*` options (`tune.cli.eval_hook` builds it from them).
    Returns the run summary (also written to `out/tune_summary.json`).
    """
    config = resolve_config(preset, model=model, mixture=mixture, out=out, **options)
    return run(config, resume=resume, overwrite=overwrite, eval_fn=eval_fn, callbacks=callbacks)


def run(config: TuneConfig, *, resume: bool = False, overwrite: bool = False, eval_fn: Callable | None = None,
        callbacks: Sequence = ()) -> dict:
    import torch
    from accelerate import PartialState

    from symtune.mixture import load_mixture
    from symtune.models import load_model, model_identity

    check_launch_environment("symtune.tune", TuneError)
    if not config.model or not config.mixture or not config.out:
        raise TuneError("model, mixture and out are required")
    if config.eval_every and eval_fn is None:
        raise TuneError(f"eval_every={config.eval_every} needs eval_fn, the evaluation to run during training: "
                        "e.g. symtune.evaluate.icl_eval_fn(eval_data_dir, eval_settings, eval_limit, eval_tasks), "
                        "the slice of the ICL suite that `symtune tune --eval-every` runs")
    precision = _precision(config.precision)
    attn = config.attn_implementation or "sdpa"
    if "flash" in attn and (not torch.cuda.is_available() or precision == "fp32"):
        raise TuneError(f"attn_implementation={attn!r} runs on a CUDA GPU in bf16 only (here: "
                        f"{'a GPU' if torch.cuda.is_available() else 'no GPU'}, precision {precision}); "
                        "use sdpa, or precision auto/bf16-mixed on a GPU")
    out = Path(config.out)
    state = PartialState(cpu=not has_accelerator())  # several CPU processes: gloo
    main = state.is_main_process
    resume_from = _check_out_dir(out, config, resume=resume, overwrite=overwrite)
    dataset, manifest = load_mixture(config.mixture)  # MixtureError says what is wrong, before --out is written
    state.wait_for_everyone()  # every process has looked before the main one writes
    if main:
        _init_out_dir(out, config, resume=resume, overwrite=overwrite, resume_from=resume_from)
    state.wait_for_everyone()

    model, tokenizer = load_model(config.model, dtype="bfloat16" if precision == "bf16" else "float32",
                                  trust_remote_code=config.trust_remote_code)
    unmark_gguf(model)
    notes = check_special_tokens(tokenizer, model, config.eos_token)
    if "flash" in attn:  # a GPU kernel: on the GPU before it is set, and for the packing check below
        model.to(state.device)
    if model.config._attn_implementation != attn:
        model.set_attn_implementation(attn)

    with state.main_process_first():  # tokenise once; the other processes read the cache
        prepared = tokenize_records(dataset, tokenizer, config.max_input_tokens, config.max_target_tokens,
                                    config.max_examples, cache_dir=out / ".cache")
    collator = PackedCollator(tokenizer.pad_token_id, flat="flash" in attn, packed=config.packing)
    packing = {"enabled": config.packing, "mode": "off", "check_max_diff": None}
    if config.packing:  # flash kernels run in half precision only: checked as they train, under bf16 autocast
        exact, diff = packing_is_exact(model, collator, autocast_dtype=torch.bfloat16 if "flash" in attn else None)
        packing["check_max_diff"] = diff
        if exact:
            packing["mode"] = ("one row per batch, variable-length kernel (cu_seq_lens)" if collator.flat else
                               "one row per packed sequence, position ids restart per example (block-diagonal mask)")
        else:
            msg = (f"packing is not exact with attention {attn!r} on this model (probability difference {diff:.2e} "
                   "between packed and separate examples); training without packing")
            log.warning(msg)
            notes.append(msg)
            packing.update(enabled=False, mode=f"off (not exact with {attn})")
            collator = PackedCollator(tokenizer.pad_token_id, packed=False)
    with state.main_process_first():
        train_dataset = pack(prepared.dataset, config.sequence_length) if packing["enabled"] else prepared.dataset
    if config.packing and packing["enabled"]:
        prepared.stats["packed_sequences"] = len(train_dataset)
        prepared.stats["pack_fill"] = prepared.stats["tokens"] / (len(train_dataset) * config.sequence_length)

    world = state.num_processes
    if config.batch_size % (config.micro_batch_size * world):
        raise TuneError(f"batch_size={config.batch_size} must be a multiple of micro_batch_size x processes = "
                        f"{config.micro_batch_size} x {world}")
    args = _sft_config(config, out, precision, grad_accum=config.batch_size // (config.micro_batch_size * world))
    trainer_ref = []
    extra = [JsonlLogCallback(out / LOG_FILE, lambda: trainer_ref[0])]
    eval_cb = time_cb = None
    if eval_fn is not None and config.eval_every:
        eval_cb = EvalHookCallback(eval_fn, config.eval_every, lambda: trainer_ref[0], at_start=resume_from is None)
        extra.append(eval_cb)
    if config.time_limit_minutes:
        time_cb = TimeLimitCallback(config.time_limit_minutes)
        extra.append(time_cb)

    from .head import target_only_head_wanted

    trainer = SymtuneTrainer(
        model=model, args=args, train_dataset=train_dataset, data_collator=collator, processing_class=tokenizer,
        peft_config=_lora_config(config), optimizer_cls_and_kwargs=_optimizer(config),
        callbacks=[*extra, *callbacks], target_only_head=target_only_head_wanted(args.device),
    )
    trainer_ref.append(trainer)
    if main:
        log.info("training: %d examples (%d dropped), %s, %d steps", prepared.stats["examples"],
                 prepared.stats["dropped_total"], packing["mode"], config.max_steps)
    start = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - start

    written = save_weights(trainer, tokenizer, out, lora=config.lora, merge=config.merge_lora, base_model=config.model)
    if not main:
        return {}
    history = trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    summary = {
        "config": config.to_dict(),
        "optimizer": config.effective_optimizer,
        "learning_rate": config.effective_learning_rate,
        "precision": precision,
        "sequence_length": config.sequence_length,
        "processes": world,
        "device": str(args.device),
        "packing": packing,
        "target_only_head": trainer.target_only_head,
        "data": prepared.stats,
        "notes": notes,
        "resumed_from": str(resume_from) if resume_from else None,
        "results": {
            "steps": trainer.state.global_step,
            "final_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss,
            "tokens": trainer.tokens_seen,
            "target_tokens": trainer.target_tokens_seen,
            "train_seconds": seconds,
            "tokens_per_s": (trainer.tokens_seen - trainer.tokens_at_start) / seconds,  # this process's share
            "target_tokens_per_s": (trainer.target_tokens_seen - trainer.target_tokens_at_start) / seconds,
            "stopped_by_time_limit": time_cb.stopped_at if time_cb else None,
            "last_eval": eval_cb.history[-1] if eval_cb and eval_cb.history else None,
        },
        "mixture": {"path": config.mixture, "records_sha256": manifest["sha256"]["records.jsonl"],
                    "total": manifest.get("total"), "counts": manifest.get("counts")},
        "model_identity": _identity(model_identity, config.model),
        "outputs": written,
        "versions": package_versions(),
        "peak_memory_mb": _peak_memory_mb(torch),
    }
    plot_loss(history, out / "loss_curve.png", f"{config.model} on {Path(config.mixture).name}")
    (out / "README.md").write_text(model_card(config.to_dict(), summary, summary["model_identity"], manifest,
                                              summary["mixture"]["records_sha256"]))
    write_json(out / SUMMARY_FILE, summary)
    shutil.rmtree(out / ".cache", ignore_errors=True)
    if not config.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return summary


# ---- helpers ------------------------------------------------------------------------------------

def _check_out_dir(out: Path, config: TuneConfig, *, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to mix runs; on resume, check the config matches and return the checkpoint to continue from."""
    ckpt_root = out / "checkpoints"
    previous = out / CONFIG_FILE
    resume_from = None
    if resume and previous.is_file():
        old = yaml.safe_load(previous.read_text()) or {}
        new = config.to_dict()
        changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
        if changed:
            raise TuneError(f"cannot resume {out}: the config differs from the interrupted run's in "
                            + ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed))
        resume_from = last_checkpoint(ckpt_root)
        if resume_from is None:
            log.warning("--resume: no complete checkpoint in %s; starting from the beginning", ckpt_root)
    elif resume:
        log.warning("--resume: %s holds no previous run; starting from the beginning", out)
    elif previous.is_file() or ckpt_root.is_dir():
        if not overwrite:
            raise TuneError(f"{out} already holds a tuning run; pass --resume to continue it or --overwrite to "
                            "start over (which deletes its checkpoints)")
    return resume_from


def _init_out_dir(out: Path, config: TuneConfig, *, resume: bool, overwrite: bool, resume_from: Path | None) -> None:
    if overwrite and not resume:
        for p in _previous_outputs(out):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "checkpoints" / ".staging", ignore_errors=True)  # leftovers of a run killed while saving
    shutil.rmtree(out / ".cache", ignore_errors=True)
    save_config(config, out / CONFIG_FILE)
    if resume_from is not None:
        _truncate_log(out / LOG_FILE, int(resume_from.name.split("-")[1]))
    else:
        (out / LOG_FILE).unlink(missing_ok=True)


def _previous_outputs(out: Path) -> list[Path]:
    """What a run writes into `out` (and --overwrite deletes); nothing else in `out` is touched."""
    names = ["checkpoints", ".cache", "adapter", LOG_FILE, SUMMARY_FILE, CONFIG_FILE, "README.md", "loss_curve.png",
             "config.json", "generation_config.json", "training_args.bin", "chat_template.jinja",
             "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt"]
    found = [out / n for n in names if (out / n).exists()]
    return found + sorted(out.glob("model*.safetensors*")) + sorted(out.glob("tokenizer*"))


def _truncate_log(path: Path, step: int) -> None:
    """Keep log lines up to the checkpoint we resume from; the lost steps will be logged again."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _precision(precision: str) -> str:
    import torch

    if precision != "auto":
        if precision != "fp32" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise TuneError(f"precision {precision!r} needs bf16 support, which this GPU lacks; use fp32")
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16-mixed" if cpu_has_native_bf16() else "fp32"


def _sft_config(config: TuneConfig, out: Path, precision: str, grad_accum: int):
    import warnings

    import torch
    from trl import SFTConfig

    with warnings.catch_warnings():  # TRL's `gradient_checkpointing` is transformers' deprecated alias
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        return _make_sft_config(SFTConfig, config, out, precision, grad_accum, torch.cuda.is_available(),
                                use_cpu=not has_accelerator())


def _make_sft_config(SFTConfig, config: TuneConfig, out: Path, precision: str, grad_accum: int, cuda: bool,
                     use_cpu: bool):
    return SFTConfig(
        use_cpu=use_cpu,
        output_dir=str(out / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=config.effective_learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,  # 0: no clipping
        optim="adamw_torch_fused",  # ~10x faster than the per-tensor loop on CPU; Adafactor: optimizer_cls_and_kwargs
        bf16=precision == "bf16-mixed",
        fp16=False,
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        report_to=[r for r in config.report_to if r != "none"] or "none",
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=config.dataloader_workers,
        dataloader_pin_memory=cuda,
        ddp_find_unused_parameters=False,
        dataset_kwargs={"skip_prepare_dataset": True},  # tokenised, checked and packed by symtune
        packing=False,
        padding_free=False,
        max_length=None,
    )


def _optimizer(config: TuneConfig):
    if config.effective_optimizer != "adafactor":
        return None
    from transformers.optimization import Adafactor

    # As in T5X (the paper's trainer): updates scaled by each parameter's RMS, step-size decay t^-0.8,
    # update clipping at 1.0, no momentum, the learning rate given (not Adafactor's relative step).
    return Adafactor, {"lr": config.effective_learning_rate, "scale_parameter": True, "relative_step": False,
                       "warmup_init": False, "decay_rate": -0.8, "clip_threshold": 1.0, "beta1": None,
                       "weight_decay": config.weight_decay}


def _lora_config(config: TuneConfig):
    if not config.lora:
        return None
    from peft import LoraConfig

    modules = config.lora_target_modules
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, bias="none",
                      target_modules="all-linear" if modules == ["all-linear"] else list(modules),
                      task_type="CAUSAL_LM")


def unmark_gguf(model) -> None:
    """A GGUF checkpoint is dequantised to ordinary float tensors when loaded, but transformers still marks the
    model as quantized, which Trainer refuses to fine-tune and save_pretrained would record. Drop the marks."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or str(getattr(method, "value", method)).lower() != "gguf":
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _identity(model_identity, name: str) -> dict:
    try:
        return model_identity(name)
    except Exception as e:  # the card should still be written; say why the identity is missing
        return {"name": name, "error": str(e)}


def _peak_memory_mb(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS, KiB on Linux
