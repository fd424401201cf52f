"""`accelerate launch -m symtune eval` with 2 CPU processes (gloo): the same samples and metrics as one
process, and a run killed with both processes writing resumes from their files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from symtune.configs import config_path

pytestmark = pytest.mark.slow


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _cmd(tiny_dir, task_data, out, processes: int, limit: int = 30) -> list[str]:
    args = ["eval", "--model", str(tiny_dir), "--suite", "icl", "--data-dir", str(task_data), "--tasks", "sst2", "trec",
            "--settings", "symbol", "flipped", "--limit", str(limit), "--trials", "2", "--max-new-tokens", "3",
            "--out", str(out), "-q"]
    if processes == 1:
        return [sys.executable, "-m", "symtune", *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path("cpu_ddp", "accelerate")),
            "--num_processes", str(processes), "--main_process_port", _port(), "-m", "symtune", *args]


ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _results(out):
    res = json.loads((out / "results.json").read_text())
    samples = (out / "samples.jsonl").read_text()
    return res, samples


def test_two_processes_give_the_results_of_one(tiny_dir, task_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, n in ((one, 1), (two, 2)):
        r = subprocess.run(_cmd(tiny_dir, task_data, out, n), env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    (res1, s1), (res2, s2) = _results(one), _results(two)
    assert s1 == s2  # every sample, log-probabilities and greedy answers included, byte for byte
    assert res1["icl"] == res2["icl"]
    assert res2["timing"]["processes"] == 2 and res1["timing"]["processes"] == 1
    assert sorted(p.name for p in two.glob("cache*.jsonl")) == ["cache.rank0.jsonl", "cache.rank1.jsonl"]


def test_killed_two_process_run_resumes(tiny_dir, task_data, tmp_path):
    out, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(_cmd(tiny_dir, task_data, out, 2, limit=100), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    files = [out / "cache.rank0.jsonl", out / "cache.rank1.jsonl"]
    deadline = time.time() + 300
    while time.time() < deadline and not all(f.exists() and f.stat().st_size for f in files):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()  # killed mid-run
    done = sum(f.read_text().count("\n") for f in files)
    r = subprocess.run(_cmd(tiny_dir, task_data, out, 1, limit=100), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res, samples = _results(out)
    assert res["complete"] and res["timing"]["resumed_from_cache"] >= done > 0
    r = subprocess.run(_cmd(tiny_dir, task_data, ref, 1, limit=100), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert samples == _results(ref)[1]


def test_run_evaluation_stages_under_accelerate_launch(tiny_dir, task_data, tmp_path, monkeypatch):
    """eval.launch hands both evaluation stages to `accelerate launch` (2 CPU processes); the process count is
    not in the stage keys, and the numbers are those of a one-process run."""
    from symtune.pipeline import run_pipeline
    from symtune.runconfig import RunConfig

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)

    def config(out, **eval_kw):
        return RunConfig(out=str(out), model=str(tiny_dir), data_dir=str(task_data),
                         mixture={"tasks": ["rte", "sst2"], "max_per_task": 4, "k_min": 1, "k_max": 2,
                                  "tokenizer": None, "max_tokens": None},
                         tune={"preset": "cpu-small", "max_steps": 1, "batch_size": 2, "pack_length": 512,
                               "warmup_steps": 0},
                         eval={"suite": "icl", "tasks": ["sst2"], "settings": ["symbol", "flipped"], "limit": 20,
                               "max_new_tokens": 2, **eval_kw})

    lines = []
    launch = ["--config_file", "cpu_ddp", "--num_processes", "2", "--main_process_port", _port()]
    state = run_pipeline(config(tmp_path / "two", launch=launch), progress=False, say=lines.append)
    assert sum("-m symtune.evaluate" in x for x in lines) == 2
    two = tmp_path / "two" / state["stages"]["eval_tuned"]["dir"]
    assert json.loads((two / "results.json").read_text())["timing"]["processes"] == 2
    state1 = run_pipeline(config(tmp_path / "one"), progress=False, say=lines.append)
    one = tmp_path / "one" / state1["stages"]["eval_tuned"]["dir"]
    assert state1["stages"]["eval_tuned"]["dir"] == state["stages"]["eval_tuned"]["dir"]  # same key
    assert (one / "samples.jsonl").read_text() == (two / "samples.jsonl").read_text()
