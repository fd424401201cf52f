"""Bad input as a new user types it: exit status 2, one line `symtune CMD: error: ...` that names the file, field
or value, no traceback, and nothing half-written."""

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


def test_eval_server_not_reachable_names_the_real_flag(tmp_path, capsys, data_dir):
    msg = _error(capsys, ["eval", "--server", "http://127.0.0.1:9", "--model", "foo", "--data-dir", str(data_dir),
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
