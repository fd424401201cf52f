import hashlib
import json
from pathlib import Path

import pytest

from symtune.cli import main
from symtune.mixture import MixtureConfig, MixtureError, build_mixture, load_mixture
from symtune.symbols import SymbolPool

TASKS = ["rte", "sst2", "trec", "copa"]


def _tree_hash(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(task_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "m"
    config = MixtureConfig(data_dir=str(task_data), tasks=TASKS, max_per_task=40, seed=7)
    manifest = build_mixture(config, out, progress=False)
    return out, manifest, config


def test_records_are_symbol_prompts_without_instructions(small, task_data):
    out, manifest, _ = small
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == manifest["total"] == 160 and manifest["counts"] == dict.fromkeys(TASKS, 40)
    from symtune.tasks import load_catalogue

    cat = load_catalogue(task_data)
    assert all(manifest["tasks"][t]["spec_sha256"] == cat[t].content_sha256 for t in TASKS)  # what the spec said
    tune_pool = SymbolPool("tune").all()
    for r in records:
        assert {"prompt", "completion", "task", "format", "mapping", "seed"} <= set(r)
        assert cat[r["task"]].instruction not in r["prompt"]
        assert set(r["mapping"]) == set(cat[r["task"]].labels)
        assert set(r["mapping"].values()) <= tune_pool
        assert r["completion"][0] == " " and r["completion"][1:] in r["mapping"].values()
        assert not set(r["mapping"].values()) & set(cat[r["task"]].labels)


def test_rebuild_is_byte_identical(small, tmp_path):
    out, _, config = small
    build_mixture(config, tmp_path / "again", progress=False)
    assert _tree_hash(out) == _tree_hash(tmp_path / "again")


def test_other_seed_differs_and_cap_is_a_prefix(small, tmp_path, task_data):
    out, _, config = small
    b = build_mixture(MixtureConfig(**{**config.__dict__, "seed": 8}), tmp_path / "s8", progress=False)
    assert b["sha256"] != json.loads((out / "manifest.json").read_text())["sha256"]
    c = MixtureConfig(**{**config.__dict__, "max_per_task": 10})
    build_mixture(c, tmp_path / "cap", progress=False)
    small_recs = [json.loads(x) for x in (tmp_path / "cap" / "records.jsonl").read_text().splitlines()]
    big = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    for task in TASKS:  # a smaller cap gives the first prompts of the bigger one, unchanged
        assert [r for r in small_recs if r["task"] == task] == [r for r in big if r["task"] == task][:10]


def test_load_mixture_checks_manifest_and_hash(small, tmp_path):
    out, manifest, _ = small
    ds, m = load_mixture(out)
    assert len(ds) == 160 and m == manifest and set(ds.column_names) >= {"prompt", "completion"}
    with pytest.raises(MixtureError, match="no manifest.json"):
        load_mixture(tmp_path)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "records.jsonl").write_text("tampered\n")
    with pytest.raises(MixtureError, match="does not match the manifest"):
        load_mixture(bad)
    m2 = json.loads((out / "manifest.json").read_text())
    m2["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m2))
    with pytest.raises(MixtureError, match="version 99"):
        load_mixture(bad)


def test_instruction_data_mixed_at_ratio(task_data, tmp_path):
    instr = tmp_path / "alpaca.jsonl"
    instr.write_text("".join(json.dumps({"instruction": f"Say {i}.", "input": "", "output": str(i)}) + "\n" for i in range(100)))
    config = MixtureConfig(data_dir=str(task_data), tasks=["rte"], max_per_task=20, instruction_data=str(instr), symbol_fraction=0.25, tokenizer=None)
    m = build_mixture(config, tmp_path / "mixed", progress=False)
    assert m["counts"] == {"rte": 20, "instruction": 60}


def test_budget_skips_are_counted(task_data, tmp_path):
    # the fixture's rte premises vary in length: at 180 tokens about half the prompts fit with 1 exemplar per class
    config = MixtureConfig(data_dir=str(task_data), tasks=["rte"], max_per_task=30, max_tokens=180)
    m = build_mixture(config, tmp_path / "tight", progress=False)
    info = m["tasks"]["rte"]
    assert info["count"] + info["skipped"]["over token budget with 1 exemplar per class"] == 30
    assert info["count"] > 0


def test_cli_bad_input_is_a_clear_error_and_leaves_nothing(task_data, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["mixture", "--data-dir", str(task_data), "--tasks", "rtee", "--out", str(out)]) == 2
    assert "did you mean rte" in capsys.readouterr().err
    assert main(["mixture", "--data-dir", str(task_data), "--tasks", "rte", "--k-min", "5", "--k-max", "2", "--out", str(out)]) == 2
    assert "k_min" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_interrupted_write_leaves_no_output(task_data, tmp_path, monkeypatch):
    import symtune.mixture as mx

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mx, "package_versions", boom)
    with pytest.raises(OSError):
        build_mixture(MixtureConfig(data_dir=str(task_data), tasks=["rte"], max_per_task=5, tokenizer=None), tmp_path / "x", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_mixture_prints_counts(task_data, tmp_path, capsys):
    assert main(["mixture", "--data-dir", str(task_data), "--tasks", "wnli", "cb", "--max-per-task", "5", "--tokenizer", "none", "-q", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "10 records" in out and "wnli" in out


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]


def test_controls_and_natural_mix(small, task_data, tmp_path):
    """The paper's controls share the symbol mixture's queries and exemplars; only the labels differ."""
    from symtune.tasks import load_catalogue

    cat = load_catalogue(task_data)
    sym = {(r["task"], r["index"]): r for r in _records(small[0])}
    common = dict(data_dir=str(task_data), tasks=TASKS, max_per_task=40, seed=7)

    build_mixture(MixtureConfig(**common, labels="natural"), tmp_path / "nat", progress=False)
    nat = _records(tmp_path / "nat")
    assert {(r["task"], r["index"]) for r in nat} == set(sym)
    for r in nat:
        spec = cat[r["task"]]
        assert r["prompt"].startswith(spec.instruction) and r["completion"][1:] in spec.labels
        assert r["n_exemplars"] == sym[(r["task"], r["index"])]["n_exemplars"]

    build_mixture(MixtureConfig(**common, labels="random"), tmp_path / "rnd", progress=False)
    rnd = _records(tmp_path / "rnd")
    consistent = 0
    for r in rnd:
        s = sym[(r["task"], r["index"])]
        assert r["mapping"] == s["mapping"] and cat[r["task"]].instruction not in r["prompt"]
        assert r["completion"][1:] in r["mapping"].values()
        consistent += r["prompt"] == s["prompt"]
    assert consistent < len(rnd) // 10  # labels reassigned at random: almost no prompt keeps all its labels

    build_mixture(MixtureConfig(**common, natural_fraction=0.5), tmp_path / "mix", progress=False)
    mix = _records(tmp_path / "mix")
    natural = [r for r in mix if r["completion"][1:] in cat[r["task"]].labels]
    assert 0.35 < len(natural) / len(mix) < 0.65
    for r in natural:
        assert r["prompt"].startswith(cat[r["task"]].instruction)
    for r in mix:
        if r not in natural:
            assert r["prompt"] == sym[(r["task"], r["index"])]["prompt"]

    # the random-label control of that mix: the natural share unchanged, only the symbol prompts randomised
    build_mixture(MixtureConfig(**common, labels="random", natural_fraction=0.5), tmp_path / "mixrnd", progress=False)
    mixrnd = {(r["task"], r["index"]): r for r in _records(tmp_path / "mixrnd")}
    assert set(mixrnd) == {(r["task"], r["index"]) for r in mix}
    kept = 0
    for r in mix:
        twin = mixrnd[(r["task"], r["index"])]
        assert twin["mapping"] == r["mapping"]
        if r in natural:
            assert twin == r
        else:
            kept += twin["prompt"] == r["prompt"]
    assert kept < (len(mix) - len(natural)) // 5


def test_exclude_tasks_and_bad_label_mode(task_data, tmp_path):
    config = MixtureConfig(data_dir=str(task_data), exclude_tasks=["sst5", "mpqa"], max_per_task=1, tokenizer=None)
    manifest = build_mixture(config, tmp_path / "m", progress=False)
    assert "sst5" not in manifest["counts"] and "mpqa" not in manifest["counts"] and "sst2" in manifest["counts"]
    with pytest.raises(MixtureError, match="sst55"):
        build_mixture(MixtureConfig(data_dir=str(task_data), exclude_tasks=["sst55"], tokenizer=None), tmp_path / "x", progress=False)
    with pytest.raises(MixtureError, match="labels='symbols'"):
        MixtureConfig(labels="symbols")
    with pytest.raises(MixtureError, match="natural_fraction"):
        MixtureConfig(labels="natural", natural_fraction=0.5)
