import pytest

from symtune.runconfig import PipelineError, RunConfig, load_run_config
from symtune.tune.config import TuneConfig, load_preset


def test_default_config_loads_and_bad_fields_are_named(tmp_path):
    c = load_run_config(data_dir="D")
    assert c.model == "smollm2-135m" and c.data_dir == "D" and c.tune["preset"] == "cpu-small"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nepochs: 3\n")
    with pytest.raises(PipelineError, match=r"bad.yaml: unknown field\(s\) \['epochs'\]"):
        load_run_config(bad)


def test_run_config_sections_are_checked_with_a_did_you_mean(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("mixture: {max_per_taks: 3}\n")
    with pytest.raises(PipelineError, match=r"c.yaml: unknown option\(s\) in mixture: max_per_taks \(did you mean max_per_task\?\)"):
        load_run_config(bad)
    bad.write_text("tune: {learning_rat: 1.0e-4}\n")
    with pytest.raises(PipelineError, match="in tune: learning_rat .did you mean learning_rate"):
        load_run_config(bad)
    bad.write_text("eval: {k: 0}\n")
    with pytest.raises(PipelineError, match="k must be >= 1"):
        load_run_config(bad)
    bad.write_text("mixture: {labels: symbols}\n")
    with pytest.raises(PipelineError, match="labels='symbols'"):
        load_run_config(bad)


def test_launch_names_a_shipped_config():
    from symtune.configs import ConfigError, config_path, launch_args

    path = str(config_path("fsdp2"))
    assert launch_args("fsdp2") == ["--config_file", path]
    assert launch_args(["--config_file", "fsdp2", "--num_processes", 8]) == ["--config_file", path, "--num_processes", "8"]
    with pytest.raises(ConfigError, match="'fsdp3' is not a file.*fsdp2"):
        launch_args(["--config_file", "fsdp3"])
    paper = load_run_config(config_path("runs/paper"))  # a shipped run config that launches by name
    assert launch_args(paper.tune["launch"])[1] == path


def test_run_config_by_shipped_name():
    assert load_run_config("paper").model == load_run_config("runs/paper").model != "smollm2-135m"
    with pytest.raises(PipelineError, match="nope.yaml: cannot read"):
        load_run_config("nope.yaml")


def test_sections_resolve_into_their_types():
    """Every stage reads a section through its type: the preset under the options given, the run's seed and
    data in the mixture and the evaluation, launch kept out of both."""
    c = RunConfig(model="m", data_dir="D", seed=3, mixture={"max_per_task": 5},
                  tune={"preset": "cpu-small", "learning_rate": 1e-4, "launch": "ddp"},
                  eval={"limit": 2, "launch": ["--num_processes", "2"]})  # fmt: skip
    m, t, e = c.mixture_config(), c.tune_config(), c.eval_config("tuned", "out")
    assert (m.max_per_task, m.seed, m.data_dir) == (5, 3, "D")
    assert t.learning_rate == 1e-4 and t.max_steps == load_preset("cpu-small")["max_steps"] != TuneConfig().max_steps
    assert c.tune_options() == {"preset": "cpu-small", "learning_rate": 1e-4} and c.tune_launch == "ddp"
    assert (e.model, e.out, e.seed, e.data_dir, e.limit) == ("tuned", "out", 3, "D", 2)
    assert c.eval_config().model == "m" and c.eval_launch == ["--num_processes", "2"]
    assert RunConfig().tune_launch is None and RunConfig().eval_launch is None
