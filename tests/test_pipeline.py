import json

import pytest

from symtune.pipeline import run_pipeline
from symtune.runconfig import PipelineError, RunConfig


def _config(tiny_dir, task_data, out, **eval_kw):
    return RunConfig(
        out=str(out), model=str(tiny_dir), data_dir=str(task_data),
        mixture={"tasks": ["rte", "sst2"], "max_per_task": 4, "k_min": 1, "k_max": 2, "tokenizer": None, "max_tokens": None},
        tune={"preset": "cpu-small", "max_steps": 2, "batch_size": 2, "save_steps": 1, "pack_length": 512, "warmup_steps": 0},
        eval={"suite": "icl", "tasks": ["raft_overruling"], "settings": ["natural", "flipped"], "limit": 2, "max_new_tokens": 2, **eval_kw},
    )  # fmt: skip


def test_run_end_to_end_then_rerun_does_nothing(tiny_dir, task_data, tmp_path):
    lines = []
    state = run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), progress=False, say=lines.append)
    assert [s["status"] for s in state["stages"].values()] == ["done"] * 5
    base = json.loads((tmp_path / "run" / state["stages"]["eval_base"]["dir"] / "results.json").read_text())
    tuned = json.loads((tmp_path / "run" / state["stages"]["eval_tuned"]["dir"] / "results.json").read_text())
    assert base["complete"] and tuned["complete"]
    assert base["model"] != tuned["model"]  # the tuned model is really the one evaluated
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "report.html").exists()

    again = []
    run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), progress=False, say=again.append)
    assert sum("skipped" in x for x in again) == 5

    # a changed evaluation config redoes the evaluations and the report, not the mixture or the tuning
    third = []
    run_pipeline(_config(tiny_dir, task_data, tmp_path / "run", k=2), progress=False, say=third.append)
    skipped = [x.split("]")[1].split(":")[0].strip() for x in third if "skipped" in x]
    assert skipped == ["mixture", "tune"]


def test_a_finished_stage_whose_output_is_gone_is_redone_only_when_read(tiny_dir, task_data, tmp_path):
    import shutil

    state = run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), progress=False, say=lambda s: None)
    tune_dir = tmp_path / "run" / state["stages"]["tune"]["dir"]
    weights = sorted(p.name for p in tune_dir.glob("*.safetensors"))
    assert weights
    for p in tune_dir.glob("*.safetensors"):  # the weights deleted to free disk, checkpoints too
        p.unlink()
    shutil.rmtree(tune_dir / "checkpoints", ignore_errors=True)
    again = []
    run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), progress=False, say=again.append)
    assert sum("skipped" in x for x in again) == 5 and any("tune: done earlier" in x and "output is gone" in x for x in again)
    assert not any(tune_dir.glob("*.safetensors"))

    # an evaluation to run reads the tuned model: the tuning is redone (the mixture, still there, is not)
    third = []
    run_pipeline(_config(tiny_dir, task_data, tmp_path / "run", k=2), progress=False, say=third.append)
    skipped = [x.split("]")[1].split(":")[0].strip() for x in third if "skipped" in x]
    assert skipped == ["mixture"] and sorted(p.name for p in tune_dir.glob("*.safetensors")) == weights


def test_from_stage_redoes_it(tiny_dir, task_data, tmp_path):
    run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), progress=False, say=lambda s: None)
    lines = []
    run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), from_stage="eval_tuned", progress=False, say=lines.append)
    assert sum("skipped" in x for x in lines) == 3
    with pytest.raises(PipelineError, match="unknown stage"):
        run_pipeline(_config(tiny_dir, task_data, tmp_path / "run"), from_stage="deploy")


def test_killed_mid_tune_then_rerun_resumes_from_the_checkpoint(tiny_dir, task_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from dataclasses import asdict

    import yaml

    from symtune.tune.trainer import last_checkpoint

    config = _config(tiny_dir, task_data, tmp_path / "run")
    config.tune.update(max_steps=40, save_steps=2, time_limit_minutes=None)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(asdict(config)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "symtune", "run", str(path), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline, ckpt = time.time() + 300, None
        while ckpt is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
            ckpt = next((c for c in map(last_checkpoint, (tmp_path / "run" / "stages").glob("tune-*/checkpoints")) if c), None)
        assert ckpt is not None, "the run did not reach a tuning checkpoint"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    tune_dir = ckpt.parent.parent
    assert proc.returncode == -signal.SIGKILL and not (tune_dir / ".done").exists()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["stages"]["tune"]["status"] == "running"

    lines = []
    state = run_pipeline(config, progress=False, say=lines.append)
    assert "mixture: done earlier" in lines[0]
    assert any("resuming tuning from its last checkpoint" in x for x in lines)
    summary = json.loads((tune_dir / "tune_summary.json").read_text())
    assert summary["resumed_from"] and int(summary["resumed_from"].rsplit("-", 1)[1]) >= 2
    assert summary["results"]["steps"] == 40
    assert [s["status"] for s in state["stages"].values()] == ["done"] * 5
    # the whole-run estimate: once tuning has been timed, the evaluations are projected
    assert any(x.startswith("[3/5] eval_base") and "min left" in x for x in lines)


def test_stages_follow_the_data_content_not_its_path(tiny_dir, task_data, tmp_path):
    import shutil

    first = tmp_path / "data1"
    for task in ("rte", "sst2", "raft_overruling"):
        shutil.copytree(task_data / "tasks" / task, first / "tasks" / task)
    run_pipeline(_config(tiny_dir, first, tmp_path / "run"), progress=False, say=lambda s: None)

    moved = first.rename(tmp_path / "data2")  # the same data elsewhere: nothing to redo
    lines = []
    run_pipeline(_config(tiny_dir, moved, tmp_path / "run"), progress=False, say=lines.append)
    assert sum("skipped" in x for x in lines) == 5

    rows = moved / "tasks" / "raft_overruling" / "train.jsonl"
    rows.write_text("".join(rows.read_text().splitlines(keepends=True)[:-1]))  # one row less: redo
    lines = []
    run_pipeline(_config(tiny_dir, moved, tmp_path / "run"), progress=False, say=lines.append)
    assert not any("skipped" in x for x in lines)


def test_an_edited_task_spec_changes_the_stage_keys(tmp_path, monkeypatch):
    """Data files unchanged, a spec's instruction edited: the stages that read tasks are keyed anew."""
    from symtune.pipeline import specs_fingerprint

    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\nrole: extra\nlabels: [a, b]\ninput_fields: [text]\ninstruction: Is it a or b?\n")
    monkeypatch.setenv("SYMTUNE_TASKS", str(spec))
    first = specs_fingerprint(None)
    assert specs_fingerprint(None) == first
    spec.write_text(spec.read_text().replace("Is it a or b?", "Which one, a or b?"))
    assert specs_fingerprint(None) != first


def test_tune_stage_under_accelerate_launch(tiny_dir, task_data, tmp_path, monkeypatch):
    """tune.launch hands the tuning stage to `accelerate launch` (here 2 CPU processes); the process count is
    not part of the stage key, since per-step results do not depend on it."""
    import socket

    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accel = "cpu_ddp"  # a shipped config, by name
    config = _config(tiny_dir, task_data, tmp_path / "run")
    lines = []
    config.tune.update(micro_batch_size=1, launch=["--config_file", str(accel), "--main_process_port", port])
    state = run_pipeline(config, progress=False, say=lines.append)
    assert any("-m accelerate.commands.launch --config_file" in x and "cpu_ddp.yaml" in x and "-m symtune.tune" in x for x in lines)
    tune_dir = tmp_path / "run" / state["stages"]["tune"]["dir"]
    summary = json.loads((tune_dir / "tune_summary.json").read_text())
    assert summary["processes"] == 2 and summary["results"]["steps"] == 2
    assert [s["status"] for s in state["stages"].values()] == ["done"] * 5

    del config.tune["launch"]  # the same run in one process: already done
    lines = []
    run_pipeline(config, progress=False, say=lines.append)
    assert sum("skipped" in x for x in lines) == 5


def test_tune_argv_round_trips_through_the_cli():
    from symtune.cli import build_parser
    from symtune.tune import TuneError
    from symtune.tune.cli import tune_argv

    argv = tune_argv("M", "MIX", "OUT", preset="paper", resume=True, max_steps=7, lora=True, packing=False,
                     lora_target_modules=["q_proj", "v_proj"], learning_rate=1e-4, seed=3)
    args = build_parser().parse_args(["tune", *argv])
    assert (args.model, args.mixture, args.out, args.preset, args.resume) == ("M", "MIX", "OUT", "paper", True)
    assert (args.max_steps, args.lora, args.packing, args.learning_rate, args.seed) == (7, True, False, 1e-4, 3)
    assert args.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(TuneError, match=r"unknown tuning option\(s\) in the arguments: epochz"):
        tune_argv("M", "MIX", "OUT", epochz=3)
