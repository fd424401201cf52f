"""symtune tune: outputs, LoRA, eval hook, kill/resume, 2-process DDP, full disk, bad input, presets, CLI.

Every run uses the tiny random Llama (2 layers, hidden 64) with the real SmolLM2 tokenizer on a small
mixture of two local tasks, a few optimizer steps each.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from symtune.configs import config_path
from symtune.tune import TuneConfig, TuneError, eval_hook, load_preset, resolve_config, tune
from symtune.tune.data import IGNORE, check_special_tokens, tokenize_records
from symtune.tune.trainer import COMPLETE_MARKER, last_checkpoint, token_counts_at

# fp32 and no time limit: the equality tests compare runs whose batches differ in shape (bf16 would round differently)
FAST = dict(preset="cpu-small", batch_size=2, micro_batch_size=1, pack_length=512, max_input_tokens=500,
            learning_rate=1e-3, warmup_steps=0, lr_scheduler="constant", save_steps=0, precision="fp32",
            time_limit_minutes=0, save_total_limit=2, keep_checkpoints=True)


@pytest.fixture(scope="module")
def mixture_dir(task_data, tmp_path_factory) -> Path:
    from symtune.mixture import MixtureConfig, build_mixture

    d = tmp_path_factory.mktemp("mixture") / "mix"
    build_mixture(MixtureConfig(data_dir=str(task_data), tasks=["sst2", "rte"], max_per_task=12, k_min=1, k_max=2,
                                max_tokens=None, tokenizer=None), d, progress=False)
    return d


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in _log(out) if "loss" in e}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ---- a full run and what it leaves --------------------------------------------------------------

def test_full_tuning_writes_model_log_curve_card_and_config(tiny_dir, mixture_dir, tmp_path):
    from symtune.models import load_model

    out = tmp_path / "run"
    summary = tune(str(tiny_dir), str(mixture_dir), str(out), **{**FAST, "max_steps": 3, "save_steps": 2})
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tune_config.yaml", "train_log.jsonl",
                 "loss_curve.png", "README.md", "tune_summary.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    resolved = yaml.safe_load((out / "tune_config.yaml").read_text())
    assert resolved["max_steps"] == 3 and resolved["preset"] == "cpu-small" and resolved["optimizer"] == "adamw"
    assert TuneConfig(**resolved).to_dict() == resolved  # the saved config is complete and valid
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3] and all(v > 0 for v in losses.values())
    assert summary["results"]["final_loss"] == pytest.approx(losses[3])
    assert all(e["tokens_per_s"] > 0 for e in _log(out) if "loss" in e)
    data = summary["data"]
    assert data["examples"] == 24 and data["dropped_total"] == 0 and data["packed_sequences"] < 24
    assert summary["packing"]["enabled"] and summary["packing"]["check_max_diff"] < 1e-4
    assert summary["target_only_head"] is True  # CPU: the LM head runs on target positions only
    # every step trained target tokens only: the counts add up to the examples' targets (+EOS)
    assert 0 < summary["results"]["target_tokens"] <= data["target_tokens"] * 2
    card = (out / "README.md").read_text()
    manifest = json.loads((mixture_dir / "manifest.json").read_text())
    assert manifest["sha256"]["records.jsonl"] in card and str(tiny_dir) in card and "full fine-tuning" in card
    assert f"{losses[3]:.4f}" in card
    # checkpoints: complete ones only, nothing left in staging
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-2", "checkpoint-3"]  # every save_steps, and the last step
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-3"
    assert all((out / "checkpoints" / c / COMPLETE_MARKER).is_file() for c in ckpts)
    assert not (out / "checkpoints" / ".staging").exists()
    # the tuned model loads through symtune.models and differs from the base
    model, tok = load_model(str(out))
    base, _ = load_model(str(tiny_dir))
    ids = tok("Input: great movie\nOutput:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base(ids).logits)


def test_lora_writes_adapter_and_merged_model(tiny_dir, mixture_dir, tmp_path):
    from symtune.models import load_model

    out = tmp_path / "lora"
    summary = tune(str(tiny_dir), str(mixture_dir), str(out), lora=True, lora_r=4, lora_alpha=8,
                   lora_target_modules=["q_proj", "v_proj"], lora_learning_rate=5e-2,
                   **{**FAST, "max_steps": 2, "precision": "bf16-mixed"})  # bf16 autocast on CPU, fp32 master weights
    assert summary["learning_rate"] == 5e-2 and summary["optimizer"] == "adamw"
    assert summary["precision"] == "bf16-mixed"
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    merged, tok = load_model(str(out))  # the merged model, no peft needed
    with_adapter, _ = load_model(str(tiny_dir), adapter=str(adapter))
    base, _ = load_model(str(tiny_dir))
    ids = tok("Input: a fine film\nOutput:", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b, c = merged(ids).logits, with_adapter(ids).logits, base(ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter did learn something
    assert "LoRA (r=4" in (out / "README.md").read_text()


def test_eval_hook_runs_every_n_steps_and_is_logged(tiny_dir, mixture_dir, tmp_path):
    calls = []

    def eval_fn(model, tokenizer):
        calls.append((model.training, torch.is_grad_enabled(), tokenizer.eos_token))
        return {"flipped_acc": 0.5 + 0.01 * len(calls), "symbol_acc": 0.25}

    out = tmp_path / "evalhook"
    summary = tune(str(tiny_dir), str(mixture_dir), str(out), **{**FAST, "max_steps": 4, "learning_rate": 1e-2},
                   eval_every=2, eval_fn=eval_fn, optimizer="adafactor")
    assert summary["optimizer"] == "adafactor"
    assert len(calls) == 3  # before the first step, after steps 2 and 4
    assert all(not training and not grad for training, grad, _ in calls)
    logged = [e for e in _log(out) if "icl/flipped_acc" in e]
    assert [e["step"] for e in logged] == [0, 2, 4]
    assert logged[-1]["icl/flipped_acc"] == pytest.approx(0.53) and logged[0]["icl/symbol_acc"] == 0.25
    assert summary["results"]["last_eval"]["icl/flipped_acc"] == pytest.approx(0.53)
    assert "flipped_acc=0.53" in (out / "README.md").read_text()


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_the_eval_hook_reads_the_model_and_leaves_training_unchanged(tiny_dir, mixture_dir, tmp_path, precision):
    """A run with the in-training evaluation gives the per-step losses of the same run without it (so a recipe
    is the same recipe whether or not its learning curve is drawn), under mixed precision too (the hook scores
    beneath autocast's wrapper and puts it back)."""

    def eval_fn(model, tokenizer):
        ids = tokenizer("Input: a\nOutput:", return_tensors="pt").input_ids
        return {"symbol_acc": float(model(ids).logits[0, -1].softmax(-1).max())}

    opts = {**FAST, "max_steps": 4, "precision": precision}
    tune(str(tiny_dir), str(mixture_dir), str(tmp_path / "plain"), **opts)
    tune(str(tiny_dir), str(mixture_dir), str(tmp_path / "hook"), **opts, eval_every=2, eval_fn=eval_fn)
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "hook") and len(_losses(tmp_path / "plain")) == 4


def _tune_with_eval_hook(model: str, mixture: str, out: str, **opts) -> dict:
    """tune() with the in-training evaluation its eval_* options describe, handed to it as `symtune tune` does."""
    return tune(model, mixture, out, eval_fn=eval_hook(resolve_config(**opts)), **opts)


def test_default_eval_hook_scores_a_fixed_icl_slice(tiny_dir, mixture_dir, task_data, tmp_path):
    out = tmp_path / "icl"
    _tune_with_eval_hook(str(tiny_dir), str(mixture_dir), str(out), **{**FAST, "max_steps": 2}, eval_every=2,
                         eval_data_dir=str(task_data), eval_tasks=["subj"], eval_limit=2)
    logged = [e for e in _log(out) if "icl/symbol/acc" in e]
    assert [e["step"] for e in logged] == [0, 2]
    for e in logged:
        assert 0 <= e["icl/symbol/acc"] <= 1 and 0 <= e["icl/flipped/acc"] <= 1


def test_eval_hook_scores_in_fp32_under_mixed_precision(tiny_dir, mixture_dir, task_data, tmp_path, caplog):
    """bf16 autocast wraps the model's forward in training: the hook scores beneath it, so its packed path
    matches the model's own forward and is used (no fallback to one forward per candidate)."""
    import logging

    caplog.set_level(logging.WARNING, logger="symtune.scoring.hf")
    _tune_with_eval_hook(str(tiny_dir), str(mixture_dir), str(tmp_path / "mixed"),
                         **{**FAST, "max_steps": 1, "precision": "bf16-mixed"}, eval_every=1, eval_data_dir=str(task_data),
                         eval_tasks=["subj"], eval_limit=2, eval_settings=["symbol"])
    assert not [r for r in caplog.records if "packed scoring unavailable" in r.getMessage()]
    assert [e["step"] for e in _log(tmp_path / "mixed") if "icl/symbol/acc" in e] == [0, 1]


def test_eval_every_without_an_eval_fn_is_refused(tiny_dir, mixture_dir, tmp_path):
    """Tuning does not build its evaluation (it does not import evaluation): asked to evaluate with nothing to
    run, it says what to pass before anything is written."""
    with pytest.raises(TuneError, match="eval_every=2 needs eval_fn.*icl_eval_fn"):
        tune(str(tiny_dir), str(mixture_dir), str(tmp_path / "x"), **FAST, eval_every=2)
    assert not (tmp_path / "x").exists()


def test_time_limit_stops_and_still_saves(tiny_dir, mixture_dir, tmp_path):
    out = tmp_path / "limited"
    summary = tune(str(tiny_dir), str(mixture_dir), str(out), **{**FAST, "max_steps": 50, "time_limit_minutes": 1e-4,
                                                                 "keep_checkpoints": False, "save_steps": 1})
    assert summary["results"]["steps"] == summary["results"]["stopped_by_time_limit"] == 1
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()
    # a limit passed during the last step stopped nothing
    last = tune(str(tiny_dir), str(mixture_dir), str(tmp_path / "last"), **{**FAST, "max_steps": 1, "time_limit_minutes": 1e-4,
                                                                        "keep_checkpoints": False, "save_steps": 1})
    assert last["results"]["steps"] == 1 and last["results"]["stopped_by_time_limit"] is None


# ---- checkpoints: kill and resume, full disk ----------------------------------------------------

KILL_SCRIPT = """
import json, sys, time
from transformers import TrainerCallback
from symtune.tune import tune

class HangAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            print("SAVED", state.global_step, flush=True)
            time.sleep(600)

model, mixture, out, opts, threads = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
import torch
torch.set_num_threads(threads)  # as many as the reference run in the test process: equal kernels, equal results
tune(model, mixture, out, callbacks=[HangAfterSave()], **opts)
"""


def test_sigkill_after_checkpoint_then_resume_equals_uninterrupted(tiny_dir, mixture_dir, tmp_path):
    opts = {**FAST, "max_steps": 4, "save_steps": 2, "save_total_limit": 3}
    ref = tmp_path / "ref"
    ref_summary = tune(str(tiny_dir), str(mixture_dir), str(ref), **opts)

    out = tmp_path / "killed"
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_dir), str(mixture_dir), str(out), json.dumps(opts),
                             str(torch.get_num_threads())],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:  # the trainer prints its log dicts here too
            lines.append(line)
            if line.startswith("SAVED"):
                break
        assert lines and lines[-1].startswith("SAVED 2"), f"the run did not reach its step-2 checkpoint: {lines}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # it really died before finishing
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-2"
    # debris a crash mid-save would leave: neither may be picked up
    (out / "checkpoints" / ".staging" / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-3").mkdir()  # no completion marker
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-2"

    with pytest.raises(TuneError, match="--resume"):
        tune(str(tiny_dir), str(mixture_dir), str(out), **opts)  # refuses to start over silently
    summary = tune(str(tiny_dir), str(mixture_dir), str(out), resume=True, **opts)
    assert summary["resumed_from"].endswith("checkpoint-2")
    # the summary counts the tokens of the whole run, not only those after the resume
    for key in ("tokens", "target_tokens"):
        assert summary["results"][key] == ref_summary["results"][key] > 0, key

    ref_losses, losses = _losses(ref), _losses(out)
    assert sorted(losses) == [1, 2, 3, 4]  # the log continues, each step once
    # tolerance: CPU kernels are deterministic for equal shapes and threads, so we expect ~bitwise equality
    for step in ref_losses:
        assert losses[step] == pytest.approx(ref_losses[step], rel=1e-6, abs=1e-7), step
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7)


def test_disk_full_while_checkpointing_keeps_previous_checkpoint(tiny_dir, mixture_dir, tmp_path, monkeypatch):
    from transformers import Trainer

    original = Trainer._save_optimizer_and_scheduler

    def fail_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            Path(output_dir, "optimizer.pt").write_bytes(b"half written")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fail_at_step_4)
    out = tmp_path / "full"
    opts = {**FAST, "max_steps": 5, "save_steps": 2}
    with pytest.raises(TuneError, match=r"disk full.*checkpoint-2 is intact.*--resume"):
        tune(str(tiny_dir), str(mixture_dir), str(out), **opts)
    ckpts = out / "checkpoints"
    assert last_checkpoint(ckpts).name == "checkpoint-2"
    assert not (ckpts / "checkpoint-4").exists() and not (ckpts / ".staging" / "checkpoint-4").exists()
    state = json.loads((ckpts / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2

    # a checkpoint from before the marker held token counts: they are read from the step's log entry instead
    marker = ckpts / "checkpoint-2" / COMPLETE_MARKER
    counts = json.loads(marker.read_text())
    marker.write_text(json.dumps({"step": 2, "time": counts["time"]}))
    assert token_counts_at(ckpts / "checkpoint-2") == (counts["tokens"], counts["target_tokens"])

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)  # space freed
    summary = tune(str(tiny_dir), str(mixture_dir), str(out), resume=True, **opts)
    assert summary["results"]["steps"] == 5 and summary["resumed_from"].endswith("checkpoint-2")
    logged = [e for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "num_tokens" in e]
    assert summary["results"]["tokens"] == logged[-1]["num_tokens"] > counts["tokens"]


# ---- several processes --------------------------------------------------------------------------

def test_two_process_ddp_matches_single_process_per_step(tiny_dir, mixture_dir, tmp_path):
    """The TRL-style invariance test: 2 CPU processes (gloo) x micro-batch 1 x 2 accumulation steps give the same
    per-step losses as 1 process x micro-batch 2 x 2 accumulation steps (global batch 4 both)."""
    opts = ["--max-steps", "3", "--batch-size", "4", "--pack-length", "512", "--max-input-tokens", "500",
            "--learning-rate", "1e-3", "--warmup-steps", "0", "--lr-scheduler", "constant", "--save-steps", "0",
            "--precision", "fp32", "--time-limit-minutes", "0"]
    ddp = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(config_path("cpu_ddp")), "--main_process_port", str(_free_port()), "-m", "symtune.tune",
           "--model", str(tiny_dir), "--mixture", str(mixture_dir), "--out", str(ddp), "--micro-batch-size", "1",
           *opts]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((ddp / "tune_summary.json").read_text())
    assert summary["processes"] == 2

    single = tmp_path / "single"
    tune(str(tiny_dir), str(mixture_dir), str(single), preset="cpu-small", max_steps=3, batch_size=4,
         micro_batch_size=2, pack_length=512, max_input_tokens=500, learning_rate=1e-3, warmup_steps=0,
         lr_scheduler="constant", save_steps=0, precision="fp32", time_limit_minutes=0)
    a, b = _losses(single), _losses(ddp)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    # weights: Adam divides by sqrt(v), so on near-zero gradients a last-bit difference in the all-reduced sum
    # becomes a visible one in the update; 1e-5 is <1% of the largest possible change (3 steps x lr 1e-3)
    wa, wb = _weights(single), _weights(ddp)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    assert json.loads((single / "tune_summary.json").read_text())["results"]["tokens"] == summary["results"]["tokens"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
@pytest.mark.parametrize("env, says", [({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
                                       ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
                                       ({"WORLD_SIZE": "8"}, "8-process GPU data parallelism")])
def test_gpu_launch_on_cpu_machine_is_refused(tiny_dir, mixture_dir, tmp_path, monkeypatch, env, says):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(TuneError, match=f"{says}.*needs GPUs.*symtune configs cpu_ddp"):
        tune(str(tiny_dir), str(mixture_dir), str(tmp_path / "x"), **{**FAST, "max_steps": 1})
    assert not (tmp_path / "x").exists()


# ---- data: EOS, pad, limits ---------------------------------------------------------------------

def test_targets_end_with_eos_and_prompts_are_tokenised_as_at_inference(smollm2_tokenizer, mixture_dir):
    from symtune.mixture import load_mixture

    ds, _ = load_mixture(mixture_dir)
    tok = smollm2_tokenizer
    prep = tokenize_records(ds, tok, 2048, 512)
    assert prep.stats["examples"] == len(ds) and prep.stats["unclean_boundary"] == 0
    for row, rec in zip(prep.dataset, ds):
        ids, labels = row["input_ids"], row["labels"]
        n_prompt = sum(1 for x in labels if x == IGNORE)
        assert ids[:n_prompt] == tok(rec["prompt"]).input_ids  # the context the model sees when evaluated
        assert labels[-1] == ids[-1] == tok.eos_token_id
        assert tok.decode(ids[n_prompt:-1]) == rec["completion"]
    assert prep.stats["target_tokens"] == sum(sum(x != IGNORE for x in r["labels"]) for r in prep.dataset)


def test_over_long_examples_are_dropped_and_counted(smollm2_tokenizer, mixture_dir):
    from symtune.mixture import load_mixture

    ds, _ = load_mixture(mixture_dir)
    lengths = sorted(len(smollm2_tokenizer(p).input_ids) for p in ds["prompt"])
    limit = lengths[len(lengths) // 2]
    prep = tokenize_records(ds, smollm2_tokenizer, max_input_tokens=limit, max_target_tokens=512)
    n_long = sum(n > limit for n in lengths)
    assert prep.stats["dropped"] == {f"prompt over {limit} tokens": n_long} and prep.stats["examples"] == len(ds) - n_long
    prep = tokenize_records(ds, smollm2_tokenizer, max_input_tokens=4096, max_target_tokens=2)
    assert prep.stats["dropped_total"] > 0 and "target over 2 tokens (EOS included)" in prep.stats["dropped"]
    with pytest.raises(TuneError, match="all 24 examples exceed the length limits"):
        tokenize_records(ds, smollm2_tokenizer, max_input_tokens=5, max_target_tokens=512)


def test_tokenizer_without_eos_or_pad(tiny_model):
    import copy

    _, tok = tiny_model
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    notes = check_special_tokens(no_pad)
    assert no_pad.pad_token == no_pad.eos_token and "no pad token" in notes[0]

    no_eos = copy.deepcopy(tok)
    no_eos.eos_token = None
    with pytest.raises(TuneError, match="no EOS token.*--eos-token"):
        check_special_tokens(no_eos)
    check_special_tokens(no_eos, eos_token="<|endoftext|>")
    assert no_eos.eos_token == "<|endoftext|>"
    with pytest.raises(TuneError, match="not in the tokenizer's vocabulary"):
        check_special_tokens(copy.deepcopy(tok), eos_token="<no such token>")


# ---- bad input ----------------------------------------------------------------------------------

def test_missing_or_incompatible_mixture(tiny_dir, mixture_dir, tmp_path):
    import shutil

    from symtune.mixture import MixtureError

    with pytest.raises(MixtureError, match="not a symtune mixture"):
        tune(str(tiny_dir), str(tmp_path / "nope"), str(tmp_path / "a"), **{**FAST, "max_steps": 1})
    old = tmp_path / "old-mixture"
    shutil.copytree(mixture_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 99
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MixtureError, match="version 99.*rebuild"):
        tune(str(tiny_dir), str(old), str(tmp_path / "b"), **{**FAST, "max_steps": 1})


def test_resume_with_a_different_config_is_refused(tiny_dir, mixture_dir, tmp_path):
    out = tmp_path / "r"
    tune(str(tiny_dir), str(mixture_dir), str(out), **{**FAST, "max_steps": 1})
    with pytest.raises(TuneError, match=r"learning_rate \(0.001 -> 0.002\)"):
        tune(str(tiny_dir), str(mixture_dir), str(out), resume=True, **{**FAST, "learning_rate": 2e-3}, max_steps=1)
    tune(str(tiny_dir), str(mixture_dir), str(out), overwrite=True, **{**FAST, "max_steps": 1})  # explicit start-over


def test_config_validation_messages():
    with pytest.raises(TuneError, match="did you mean learning_rate"):
        resolve_config("cpu-small", learning_rte=1e-3)
    with pytest.raises(TuneError, match="multiple of micro_batch_size"):
        TuneConfig(batch_size=6, micro_batch_size=4)
    with pytest.raises(TuneError, match="optimizer='sgd' is not one of adamw, adafactor"):
        TuneConfig(optimizer="sgd")
    with pytest.raises(TuneError, match="neither one of cpu-small, cpu-study, paper nor an existing YAML"):
        resolve_config("laptop")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_flash_attention_without_a_gpu_is_refused_before_out_is_written(tiny_dir, mixture_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TuneError, match="flash_attention_2.*CUDA GPU in bf16 only.*use sdpa"):
        tune(str(tiny_dir), str(mixture_dir), str(out), **{**FAST, "attn_implementation": "flash_attention_2"})
    assert not out.exists()


# ---- presets and CLI ----------------------------------------------------------------------------

def test_presets_are_package_data_and_mirror_the_config():
    from symtune.tune.config import PRESETS

    paper = load_preset("paper")
    assert (paper["batch_size"], paper["optimizer"], paper["learning_rate"], paper["max_steps"]) == (
        32, "adafactor", 3e-3, 4000)
    assert (paper["max_input_tokens"], paper["max_target_tokens"]) == (2048, 512)
    assert paper["lora_optimizer"] == "adamw" and paper["lora_learning_rate"] == 2e-4
    small = resolve_config("cpu-small", model="m", mixture="x", out="o")
    assert small.effective_optimizer == "adamw" and small.precision == "auto" and small.time_limit_minutes == 6
    for name in PRESETS:  # every field a preset sets exists; every preset builds a valid config
        resolve_config(name)


def test_yaml_preset_file_and_overrides(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("max_steps: 7\nlora: true\nlora_r: 8\n")
    cfg = resolve_config(str(p), max_steps=9)
    assert (cfg.max_steps, cfg.lora, cfg.lora_r, cfg.preset) == (9, True, 8, str(p))
    assert cfg.effective_learning_rate == cfg.lora_learning_rate


def test_cli_flags_come_from_the_config(monkeypatch):
    import argparse

    import symtune.tune.recipe as recipe
    from symtune.tune import add_tune_parser

    seen = {}
    monkeypatch.setattr(recipe, "tune", lambda *a, **kw: seen.update(args=a, kw=kw) or {})
    parser = argparse.ArgumentParser()
    add_tune_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune", "--model", "m", "--mixture", "x", "--out", "o", "--preset", "paper", "--lora",
                              "--no-packing", "--max-steps", "5", "--lora-target-modules", "q_proj", "k_proj",
                              "--resume"])
    assert args.func(args) == 0
    assert seen["args"] == ("m", "x", "o")
    assert seen["kw"] == {"preset": "paper", "resume": True, "overwrite": False, "lora": True, "packing": False,
                          "max_steps": 5, "lora_target_modules": ["q_proj", "k_proj"], "eval_fn": None}


def test_cli_hands_the_eval_hook_to_tune(monkeypatch):
    """`symtune tune --eval-every N` (and `python -m symtune.tune` under accelerate launch) builds the ICL slice
    from the eval_* flags and hands it to tune()."""
    import argparse

    import symtune.tune.recipe as recipe
    from symtune.tune import add_tune_parser

    seen = {}
    monkeypatch.setattr(recipe, "tune", lambda *a, **kw: seen.update(kw) or {})
    parser = argparse.ArgumentParser()
    add_tune_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune", "--model", "m", "--mixture", "x", "--out", "o", "--eval-every", "3"])
    assert args.func(args) == 0
    assert seen["eval_every"] == 3 and callable(seen["eval_fn"])


def test_shipped_accelerate_configs_parse():
    from symtune.configs import shipped

    found = shipped("accelerate")  # package data: what a plain `pip install` has
    assert {"accelerate/ddp", "accelerate/fsdp2", "accelerate/deepspeed_zero2", "accelerate/deepspeed_zero3",
            "accelerate/cpu_ddp"} <= set(found)
    kinds = {n: yaml.safe_load(p.read_text())["distributed_type"] for n, p in found.items()}
    assert kinds["accelerate/fsdp2"] == "FSDP" and kinds["accelerate/deepspeed_zero3"] == "DEEPSPEED"
    assert yaml.safe_load(config_path("fsdp2").read_text())["fsdp_config"]["fsdp_version"] == 2


# The per-step losses of a fixed tiny run (torchtune's recipe tests): a change that shifts every tuning run —
# the data order, packing, the loss, the optimizer's settings — moves these numbers and fails here.
# Measured with torch 2.13.0 on CPU in fp32, on the fixture data (tests/fixtures/data); the tolerance covers other
# CPUs' kernels, not a changed recipe.
PINNED_LOSSES = [10.8588, 10.7506, 10.7846, 10.69]


def test_pinned_loss_trajectory(tiny_dir, mixture_dir, tmp_path):
    out = tmp_path / "pin"
    tune(str(tiny_dir), str(mixture_dir), str(out), preset="cpu-small", max_steps=4, batch_size=2, micro_batch_size=2,
         pack_length=512, max_input_tokens=500, learning_rate=1e-3, warmup_steps=1, lr_scheduler="constant_with_warmup",
         save_steps=0, precision="fp32", time_limit_minutes=0, seed=0)
    got = [round(v, 4) for _, v in sorted(_losses(out).items())]
    assert got == pytest.approx(PINNED_LOSSES, rel=2e-3)
