"""Bad input as a new user types it: exit status 2, one line `symtune CMD: error: ...` that names the file, field
or value, no traceback, and nothing half-written."""

import json

import pytest

from symtune.cli import main


def _error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err and err[-1].startswith(f"symtune {argv[0]}: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_eval_model_file_that_is_not_gguf(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a gguf file")
    msg = _error(capsys, ["eval", "--model", str(bad), "--limit", "1", "--out", str(tmp_path / "e")])
    assert str(bad) in msg and "GGUF" in msg
    assert not (tmp_path / "e").exists()


def test_eval_server_not_reachable_names_the_real_flag(tmp_path, capsys, task_data):
    msg = _error(capsys, ["eval", "--server", "http://127.0.0.1:9", "--model", "foo", "--data-dir", str(task_data),
                          "--limit", "1", "--out", str(tmp_path / "e")])  # fmt: skip
    assert "127.0.0.1:9" in msg and "--server" in msg and "--server-url" not in msg


@pytest.mark.parametrize("section, text, needle", [
    ("mixture", "max_per_taks: 3", "max_per_taks (did you mean max_per_task?)"),
    ("tune", "learning_rat: 1.0e-4", "learning_rat (did you mean learning_rate?)"),
    ("eval", "limt: 3", "limt (did you mean limit?)"),
    ("mixture", "labels: symbols", "labels='symbols'"),
])  # fmt: skip
def test_run_config_typo(tmp_path, capsys, section, text, needle):
    config = tmp_path / "c.yaml"
    config.write_text(f"{section}: {{{text}}}\nout: {tmp_path / 'run'}\n")
    msg = _error(capsys, ["run", str(config), "--data-dir", str(tmp_path)])
    assert str(config) in msg and needle in msg
    assert not (tmp_path / "run").exists()


def test_study_config_typo(tmp_path, capsys):
    config = tmp_path / "s.yaml"
    config.write_text("validation: {limit: 2}\ntest: {limit: 2}\nrecipes: {a: {tune: {learning_rat: 1}}}\n")
    msg = _error(capsys, ["study", str(config)])
    assert "recipe 'a'" in msg and "learning_rat (did you mean learning_rate?)" in msg


def _task(root, name="t1", labels=("a", "b"), rows=None, spec=None):
    d = root / "tasks" / name
    d.mkdir(parents=True, exist_ok=True)
    spec = spec if spec is not None else json.dumps({"name": name, "role": "tune", "input_fields": ["text"],
                                                     "labels": list(labels), "instruction": "a or b?"})  # fmt: skip
    (d / "task.json").write_text(spec)
    rows = rows if rows is not None else [{"text": f"x{i}", "label": labels[i % len(labels)]} for i in range(8)]
    (d / "train.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return root


# (what a user typed, substrings the one error line must hold); "{data}" is a small local data dir made per case
DATA_CASES = {
    "unknown task": (["eval", "--tasks", "nosuch", "--limit", "1"], ["nosuch"]),
    "malformed task.json": (["mixture", "--tasks", "t1", "--tokenizer", "none"], ["task.json"], {"spec": "{not json"}),
    "label outside the spec": (["mixture", "--tasks", "t1", "--tokenizer", "none"], ["train.jsonl:1", "'c'"],
                               {"rows": [{"text": "x", "label": "c"}]}),
    "one-class task": (["mixture", "--tasks", "t1", "--tokenizer", "none"], ["only one class"],
                       {"rows": [{"text": f"x{i}", "label": "a"} for i in range(4)]}),
    "invalid JSONL line": (["mixture", "--tasks", "t1", "--tokenizer", "none"], ["train.jsonl:2", "not valid JSON"],
                           {"rows": [{"text": "x", "label": "a"}, "{oops"]}),
    "missing field": (["mixture", "--tasks", "t1", "--tokenizer", "none"], ["train.jsonl:1", "missing field", "text"],
                      {"rows": [{"txt": "x", "label": "a"}]}),
    "excluded task unknown": (["mixture", "--exclude-tasks", "nosuch", "--tokenizer", "none"], ["nosuch"]),
    "k-min above k-max": (["mixture", "--k-min", "3", "--k-max", "2", "--tokenizer", "none"], ["k_min=3", "k_max=2"]),
    "token budget too small": (["mixture", "--max-tokens", "5"], ["max_tokens=5"]),
    "symbol fraction without instruction data": (["mixture", "--symbol-fraction", "0.5"], ["--instruction-data"]),
    "natural fraction with natural labels": (["mixture", "--labels", "natural", "--natural-fraction", "0.5"], ["natural_fraction"]),
    "missing instruction data file": (["mixture", "--tasks", "t1", "--tokenizer", "none", "--instruction-data", "nope.jsonl",
                                       "--symbol-fraction", "0.5"], ["nope.jsonl"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_or_mixture_input(case, tmp_path, capsys):
    argv, needles, *kw = DATA_CASES[case]
    data = _task(tmp_path / "data", **(kw[0] if kw else {}))
    out = tmp_path / "out"
    msg = _error(capsys, [argv[0], "--data-dir", str(data), "--out", str(out), *argv[1:]])
    for n in needles:
        assert n in msg, (case, msg)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_empty_data_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    msg = _error(capsys, ["mixture", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "m"), "--tokenizer", "none"])
    assert "no tuning tasks" in msg and "--data-dir" in msg
    assert not (tmp_path / "m").exists()


def test_data_dir_that_does_not_exist(tmp_path, capsys):
    msg = _error(capsys, ["mixture", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert str(tmp_path / "nope") in msg


def test_mixture_out_exists(tmp_path, capsys):
    data = _task(tmp_path / "data")
    (tmp_path / "m").mkdir()
    msg = _error(capsys, ["mixture", "--data-dir", str(data), "--out", str(tmp_path / "m"), "--tasks", "t1", "--tokenizer", "none"])
    assert "already exists" in msg and "--overwrite" in msg


@pytest.mark.parametrize("argv, needles", [
    (["eval", "--model", "/nonexistent/model", "--limit", "1"], ["/nonexistent/model"]),
    (["eval", "--k", "0"], ["k must be >= 1"]),
    (["eval", "--limit", "0"], ["--limit must be >= 1"]),
    (["eval", "--trials", "0"], ["trials must be >= 1"]),
    (["eval", "--format", "nosuch"], ["nosuch"]),
    (["tune", "--model", "m", "--mixture", "/nonexistent/mix", "--out", "OUT"], ["/nonexistent/mix"]),
    (["tune", "--model", "m", "--mixture", "MIX", "--out", "OUT", "--preset", "nosuch"], ["nosuch"]),
    (["report", "/nonexistent/run"], ["/nonexistent/run"]),
    (["report", "--base", "X"], ["give both"]),
    (["study", "/nonexistent/study.yaml"], ["/nonexistent/study.yaml"]),
    (["configs", "nope"], ["nope", "fsdp2"]),
])  # fmt: skip
def test_bad_command_input(argv, needles, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("MIX", str(tmp_path)) for a in argv]
    if argv[0] == "eval":
        argv += ["--out", str(tmp_path / "out"), "--data-dir", str(_task(tmp_path / "data"))]
    msg = _error(capsys, argv)
    for n in needles:
        assert n in msg, msg
    assert not (tmp_path / "out").exists()


def test_study_only_names_an_unknown_recipe(tmp_path, capsys):
    config = tmp_path / "s.yaml"
    config.write_text(f"out: {tmp_path / 'study'}\nvalidation: {{limit: 2}}\ntest: {{limit: 2}}\nrecipes: {{a: {{}}}}\n")
    msg = _error(capsys, ["study", str(config), "--only", "b"])
    assert "'b'" in msg and "'a'" in msg


def test_run_launch_names_no_shipped_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"out: {tmp_path / 'run'}\ntune: {{launch: [--config_file, fsdp3]}}\n")
    msg = _error(capsys, ["run", str(config), "--data-dir", str(tmp_path)])
    assert "fsdp3" in msg and "fsdp2" in msg
    assert not (tmp_path / "run").exists()


def test_no_data_dir_and_no_hub_is_said_at_once(tmp_path, capsys, monkeypatch):
    import time

    from symtune.tasks import sources

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    sources.hub_unreachable.cache_clear()
    t0 = time.time()
    msg = _error(capsys, ["mixture", "--out", str(tmp_path / "m"), "--tasks", "sst2", "--tokenizer", "none"])
    assert "unreachable" in msg and "--data-dir PATH" in msg and time.time() - t0 < 30
    sources.hub_unreachable.cache_clear()
