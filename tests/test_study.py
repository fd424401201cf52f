import json
import re

import pytest
import yaml

from symtune.cli import main
from symtune.report.runs import pair_run
from symtune.report.sections import delta_cell, icl_deltas, power_cell
from symtune.study import StudyError, load_study_config, run_study, select

VAL = ["raft_overruling"]
TEST = ["raft_twitter_complaints"]


def _write(tmp_path, tiny_dir, task_data, **extra) -> str:
    raw = {
        "out": str(tmp_path / "study"), "model": str(tiny_dir), "data_dir": str(task_data),
        "mixture": {"tasks": ["rte", "sst2"], "max_per_task": 4, "k_min": 1, "k_max": 2, "tokenizer": None, "max_tokens": None},
        "tune": {"preset": "cpu-small", "max_steps": 2, "batch_size": 2, "save_steps": 1, "pack_length": 512,
                 "warmup_steps": 0, "eval_every": 1, "eval_tasks": VAL, "eval_settings": ["symbol"], "eval_limit": 2},
        "validation": {"suite": "icl", "tasks": VAL, "settings": ["natural", "symbol", "flipped"], "limit": 3, "max_new_tokens": 2},
        "test": {"suite": "icl", "tasks": TEST, "settings": ["symbol", "flipped"], "limit": 3, "max_new_tokens": 2},
        "diagnostic": {"suite": "icl", "tasks": ["sst2"], "settings": ["symbol"], "limit": 2, "max_new_tokens": 2},
        "recipes": {"a": {}, "ctl": {"control": True, "mixture": {"labels": "random"}}},
        "grid": {"tune.learning_rate": [1e-3, 1e-2]},
        **extra,
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_study_shares_stages_selects_on_validation_and_tests_the_selection(tiny_dir, task_data, tmp_path):
    config = load_study_config(_write(tmp_path, tiny_dir, task_data))
    assert [r.name for r in config.recipes] == ["a", "ctl", "learning_rate=0.001", "learning_rate=0.01"]
    lines = []
    selection = run_study(config, progress=False, say=lines.append)
    out = tmp_path / "study"
    stages = sorted(p.name.split("-")[0] for p in (out / "stages").iterdir())
    # one mixture for the three symbol recipes + one for the control; one base evaluation per suite
    assert stages.count("mixture") == 2 and stages.count("eval_base") == 3
    assert stages.count("tune") == 4  # 3 screened + the control (the finalist is not tuned again)
    assert stages.count("eval_tuned") == 8  # 3 on validation, 3 on the seen-task diagnostic, finalist and control on test
    assert sorted(p.name for p in (out / "diagnostic").iterdir()) == ["a", "learning_rate=0.001", "learning_rate=0.01"]
    scores = selection["scores"]
    assert set(scores) == {"a", "learning_rate=0.001", "learning_rate=0.01"}  # the control is never screened
    best = max(scores, key=lambda n: scores[n]["score"])
    assert selection["finalists"] == [best] and selection["controls"] == ["ctl"]
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted([best, "ctl"])
    # the control is tuned like the finalist, but for its labels
    ctl = json.loads((out / "test" / "ctl" / "state.json").read_text())["config"]
    fin = json.loads((out / "test" / best / "state.json").read_text())["config"]
    assert ctl["tune"] == fin["tune"] and ctl["mixture"] == {**fin["mixture"], "labels": "random"}
    assert json.loads((out / "selection.json").read_text()) == selection
    report = (out / "report.md").read_text()
    assert "Validation suite" in report and "Test suite" in report and "★" in report and "curves.png" in report
    assert "Seen tasks" in report and "diagnostic.png" in report
    assert report.count("What each Δ could see") >= 2 and "| MDE " in report  # power beside every Δ (one task: no tasks interval)
    assert "Pending" not in report  # controls run on the test suite only: never pending on validation
    for n in ["a", "learning_rate=0.001", "learning_rate=0.01"]:
        assert n in report
    # the finalist against the control, paired on the test queries: what `symtune report --base <control's tuned
    # evaluation> --tuned <finalist's>` computes
    stage = {r: out / "test" / r / json.loads((out / "test" / r / "state.json").read_text())["stages"]["eval_tuned"]["dir"]
             for r in (best, "ctl")}
    pair = icl_deltas(pair_run(stage["ctl"], stage[best]))
    for metric in ("gen_acc", "acc"):
        row = f"| {best} − ctl | " + " | ".join(f"{delta_cell(pair[(s, metric)])}; {power_cell(pair[(s, metric)])}"
                                              for s in ("symbol", "flipped")) + " |"
        assert row in report

    again = []
    run_study(config, progress=False, say=again.append)  # everything finished: every stage is skipped
    assert not [x for x in again if re.match(r"\[\d/5\] \w+ finished in", x)]
    assert sum("skipped" in x for x in again) == 8 * 5  # 3 validation + 3 diagnostic + 2 test runs, 5 stages each

    # the results without weights: a study over a copy of them does no work and selects the same
    assert main(["study", str(tmp_path / "study.yaml"), "--save-results", str(tmp_path / "kept")]) == 0
    kept = tmp_path / "kept"
    assert not list(kept.rglob("*.safetensors")) and not list(kept.rglob("checkpoint-*"))
    # per-query samples kept compressed; the report below is rebuilt from them, to the same tables
    assert list(kept.rglob("samples.jsonl.gz")) and not list(kept.rglob("samples.jsonl"))
    assert sum(p.stat().st_size for p in kept.rglob("*") if p.is_file()) < sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 10
    copy = load_study_config(_write(tmp_path, tiny_dir, task_data, out=str(kept)))
    third = []
    assert run_study(copy, progress=False, say=third.append) == selection
    assert not [x for x in third if re.match(r"\[\d/5\] \w+ ", x) and "skipped" not in x]
    def body(text):  # the report's numbers and tables, not its title or the date it was written
        return [x for x in text.splitlines() if not x.startswith("# symtune study") and "Written by" not in x]

    assert body((kept / "report.md").read_text()) == body(report)


def test_controls_of_a_mixed_finalist(tiny_dir, task_data, tmp_path):
    """A finalist that keeps half its prompts natural: the random control keeps that half (only the symbol
    prompts get inconsistent labels); the natural control makes every prompt natural."""
    from symtune.mixture import MixtureConfig
    from symtune.study import Recipe

    config = load_study_config(_write(tmp_path, tiny_dir, task_data))
    mixed = Recipe("mixed", {"natural_fraction": 0.5}, {"learning_rate": 3e-5})
    rnd = config.control_on(Recipe("r", {"labels": "random"}, {}, True), mixed)
    nat = config.control_on(Recipe("n", {"labels": "natural"}, {}, True), mixed)
    assert rnd.mixture == {"natural_fraction": 0.5, "labels": "random"} and rnd.tune == mixed.tune
    assert nat.mixture == {"natural_fraction": 0.0, "labels": "natural"} and nat.tune == mixed.tune
    for control in (rnd, nat):  # each builds a valid mixture config
        MixtureConfig(**config.run_config(control, "test").mixture)


def test_named_finalists_are_tested_with_the_controls_without_screening(tiny_dir, task_data, tmp_path, capsys):
    """--finalists: a recipe chosen elsewhere (another model, an earlier study) is tested with its controls
    without a validation run, and the selection records it as named, not selected."""
    path = _write(tmp_path, tiny_dir, task_data)
    assert main(["study", path, "--phase", "test", "--finalists", "zzz", "-q"]) == 2
    assert "finalists ['zzz'] are not recipes" in capsys.readouterr().err
    assert main(["study", path, "--phase", "test", "--finalists", "a", "-q"]) == 0
    out = tmp_path / "study"
    assert not (out / "validation").exists()
    assert sorted(p.name for p in (out / "test").iterdir()) == ["a", "ctl"]
    selection = json.loads((out / "selection.json").read_text())
    assert selection["finalists"] == ["a"] and "named" in selection["rule"] and selection["scores"] == {}


def test_study_config_errors_name_the_field(tiny_dir, task_data, tmp_path):
    with pytest.raises(StudyError, match="unknown field"):
        load_study_config(_write(tmp_path, tiny_dir, task_data, epochs=3))
    with pytest.raises(StudyError, match="grid axis 'lr'"):
        load_study_config(_write(tmp_path, tiny_dir, task_data, grid={"lr": [1]}))
    with pytest.raises(StudyError, match="recipe .a.*max_per_taks .did you mean max_per_task"):
        load_study_config(_write(tmp_path, tiny_dir, task_data, recipes={"a": {"mixture": {"max_per_taks": 3}}}))
    with pytest.raises(StudyError, match="finalists"):
        load_study_config(_write(tmp_path, tiny_dir, task_data, finalists=["zzz"]))
    config = load_study_config(_write(tmp_path, tiny_dir, task_data))
    with pytest.raises(StudyError, match="validation not finished"):
        select(config)
    rc = main(["study", _write(tmp_path, tiny_dir, task_data, select={"metric": "f1"})])
    assert rc == 2


def test_headline_run_config_is_the_studys_selected_recipe_on_its_test_protocol():
    """`symtune run headline` reproduces the study's test-phase run of the selected recipe: the same mixture, the
    same evaluation, and a tuning config that differs only in the in-training evaluation hook (which reads the
    model, never changes it)."""
    import json
    from pathlib import Path

    from symtune.runconfig import load_run_config
    from symtune.tune.config import resolve_config

    study = load_study_config("study")
    chosen = json.loads((Path(__file__).parents[1] / "docs" / "study" / "selection.json").read_text())["finalists"]
    recipe = next(r for r in study.recipes if r.name == chosen[0])
    ran = study.run_config(recipe, "test")
    headline = load_run_config("headline")
    # the two declared differences between the study as it ran and study.yaml now: the mixture kept rows that
    # overlap evaluation tasks, and the test asked three settings
    as_run_mixture = {**ran.mixture, "keep_contaminated": True}
    as_run_eval = {**ran.eval, "settings": ["natural", "symbol", "flipped"]}
    assert (headline.model, headline.seed, headline.mixture) == (ran.model, ran.seed, as_run_mixture)
    assert headline.eval == as_run_eval
    assert ran.eval["settings"] == ["natural+instr", "natural", "symbol+instr", "symbol", "flipped"]
    hook = {"eval_every", "eval_tasks", "eval_settings", "eval_limit", "eval_data_dir", "preset"}

    def tuning(section):
        opts = dict(section)
        return {k: v for k, v in resolve_config(opts.pop("preset"), **opts).to_dict().items() if k not in hook}

    assert tuning(headline.tune) == tuning(ran.tune)
