"""Decontamination: which tuning rows overlap an evaluation task, and the mixture without them.

The data are tiny task directories written here, so every overlap is known by construction."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from symtune.cli import main
from symtune.decontaminate import TaskRows, check_overlap, find_overlaps, normalise, tuning_and_evaluation
from symtune.mixture import MixtureConfig, build_mixture

# An evaluation query of 17 words, and tuning rows that meet it in different ways.
QUERY = "Every morning the old lighthouse keeper climbed ninety stairs to polish the great brass lamp before sunrise."
SAME = "EVERY morning -- the old lighthouse-keeper climbed ninety stairs, to polish the great brass lamp before sunrise!!"
SHARES_13 = "Locals say the old lighthouse keeper climbed ninety stairs to polish the great brass lamp at dawn."
SHARES_12 = "Locals say the old lighthouse keeper climbed ninety stairs to polish the great brass bell at dawn."
INSIDE = "the great brass lamp"  # under 13 words: compared whole only, so a phrase inside the query does not count
POOL_ROW = "A short, quiet film."  # in the evaluation task's exemplar pool (train)
SAME_SHORT = "a short quiet film"


def _write_task(root: Path, name: str, role: str, splits: dict, fields=("text",)) -> None:
    d = root / "tasks" / name
    d.mkdir(parents=True)
    spec = {"name": name, "role": role, "input_fields": list(fields), "labels": ["no", "yes"], "instruction": "Yes or no?"}
    (d / "task.json").write_text(json.dumps(spec))
    for split, rows in splits.items():
        with (d / f"{split}.jsonl").open("w") as f:
            for i, text in enumerate(rows):
                inputs = dict(zip(fields, text)) if isinstance(text, tuple) else {fields[0]: text}
                f.write(json.dumps({**inputs, "label": ["no", "yes"][i % 2]}) + "\n")


def _filler(kind: str, n: int) -> list[str]:
    return [f"{kind} row {i} says {kind}{i}" for i in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """toy_tune: rows 0-3 as above (0: equal, 1: a shared 13-gram, 2: 12 words only, 3: a phrase inside), then
    clean rows; toy_pairs: two fields that, joined, equal the query; toy_eval: the evaluation task; toy_valid: a
    tuning task whose row 0 equals toy_tune's row 4 (an evaluation task when excluded from tuning)."""
    root = tmp_path_factory.mktemp("decon")
    tune = [SAME, SHARES_13, SHARES_12, INSIDE, SAME_SHORT, *_filler("tune", 15)]
    _write_task(root, "toy_tune", "tune", {"train": tune})
    pairs = [("Every morning the old lighthouse keeper climbed ninety stairs", "to polish the great brass lamp before sunrise"),
             *[(f"premise {i}", f"hypothesis {i}") for i in range(9)]]
    _write_task(root, "toy_pairs", "tune", {"train": pairs}, fields=("premise", "hypothesis"))
    _write_task(root, "toy_eval", "eval", {"train": [POOL_ROW, *_filler("pool", 7)], "test": [QUERY, *_filler("query", 5)]})
    _write_task(root, "toy_valid", "tune", {"train": ["Tune row 0 says TUNE0!", *_filler("valid", 5)]})
    return root


def test_normalise():
    assert normalise("  The QUICK-brown fox, isn't it?\t") == ["the", "quick", "brown", "fox", "isn", "t", "it"]
    assert normalise("@user @user @USER thanks") == ["user", "thanks"]  # a run of one word counts once
    assert normalise("Ça va, ÉTÉ_2") == ["ça", "va", "été", "2"]
    assert normalise("🙂 !!") == []


def test_exact_13gram_and_12_words(data):
    tuning, evaluation = tuning_and_evaluation(str(data))
    assert [s.name for s in tuning] == ["toy_pairs", "toy_tune", "toy_valid"]
    assert [s.name for s in evaluation] == ["toy_eval"]
    overlap = check_overlap(tuning, evaluation, str(data))
    assert overlap.flagged == {"toy_tune": [0, 1, 4], "toy_pairs": [0]}  # not 2 (12 words), not 3 (short, inside)
    pairs = {(p.tuning, p.evaluation): p for p in overlap.pairs}
    assert set(pairs) == {("toy_tune", "toy_eval"), ("toy_pairs", "toy_eval")}
    p = pairs["toy_tune", "toy_eval"]
    assert (p.exact, p.ngram, p.rows) == (2, 1, 3)
    assert p.hit == {"train": 1, "test": 1} and (p.query_split, p.queries, p.n_queries) == ("test", 1, 6)
    assert (pairs["toy_pairs", "toy_eval"].exact, pairs["toy_pairs", "toy_eval"].ngram) == (1, 0)  # fields joined
    assert overlap.tuning == {"toy_pairs": 10, "toy_tune": 20, "toy_valid": 6}
    assert overlap.evaluation == {"toy_eval": {"train": 8, "test": 6}}
    assert overlap.queries_hit == {"toy_eval": 1}  # the one query, met by both tuning tasks


def test_pools_diagnostics_and_empty_inputs():
    rows = lambda *texts: [normalise(t) for t in texts]  # noqa: E731
    long_ = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    ev = TaskRows("ev", {"train": rows(long_.upper(), "only an emoji 🙂", "🙂"), "test": rows(long_ + " fifteen", "🙂🙂")})
    seen = TaskRows("seen", {"train": rows("a b c", "Hello there"), "test": rows("hello there!")})
    tune = TaskRows("tune", {"train": rows("🙂", "A b c.")})
    overlap = find_overlaps([tune, seen], [ev, seen])
    # empty normalised inputs equal nothing; a task also tuned on counts with its held-out splits only: seen's
    # train row "Hello there" is its own test query, tune's "a b c" meets only seen's train
    assert overlap.flagged == {"seen": [1]}
    assert overlap.evaluation == {"ev": {"train": 3, "test": 2}, "seen": {"test": 1}}
    pools = {p.task: p for p in overlap.pools}
    assert (pools["ev"].exact, pools["ev"].ngram, pools["ev"].n_queries) == (0, 1, 2)  # the 13-gram, not the emoji
    assert "seen" not in pools  # its exemplar pool is what is tuned on: the pair (seen, seen) above


def test_mixture_drops_overlapping_rows_and_records_them(data, tmp_path, capsys):
    base = dict(data_dir=str(data), k_min=1, k_max=2, tokenizer=None, seed=3)
    m = build_mixture(MixtureConfig(**base), tmp_path / "clean", progress=False)
    d = m["decontamination"]
    assert d["dropped"] is True and d["method"]["ngram"] == 13
    assert (d["tuning_rows"], d["overlapping_rows"]) == (36, 4) and d["unchecked"] == {}
    assert {(p["tuning"], p["evaluation"], p["exact"], p["ngram"], p["queries"]) for p in d["pairs"]} == {
        ("toy_tune", "toy_eval", 2, 1, 1), ("toy_pairs", "toy_eval", 1, 0, 1)}
    assert m["counts"] == {"toy_pairs": 9, "toy_tune": 17, "toy_valid": 6}
    assert m["tasks"]["toy_tune"]["skipped"] == {"train: overlaps an evaluation task": 3}
    records = [json.loads(x) for x in (tmp_path / "clean" / "records.jsonl").read_text().splitlines()]
    assert {r["index"] for r in records if r["task"] == "toy_tune"} == set(range(20)) - {0, 1, 4}
    text = "\n".join(r["prompt"] for r in records)
    assert "brass lamp before" not in text and "brass lamp at dawn" not in text and "short quiet" not in text
    assert "brass bell at dawn" in text  # 12 words in common: kept

    kept = build_mixture(MixtureConfig(**base, keep_contaminated=True), tmp_path / "kept", progress=False)
    assert kept["counts"] == {"toy_pairs": 10, "toy_tune": 20, "toy_valid": 6}
    assert kept["decontamination"]["dropped"] is False and kept["decontamination"]["pairs"] == d["pairs"]
    assert kept["config"]["keep_contaminated"] is True
    # a task with nothing to drop gives the same records either way
    kept_records = [json.loads(x) for x in (tmp_path / "kept" / "records.jsonl").read_text().splitlines()]
    assert [r for r in records if r["task"] == "toy_valid"] == [r for r in kept_records if r["task"] == "toy_valid"]

    # a validation suite kept out of tuning counts as an evaluation task
    ex = build_mixture(MixtureConfig(**base, exclude_tasks=["toy_valid"]), tmp_path / "ex", progress=False)
    assert "toy_valid" not in ex["counts"] and sorted(ex["decontamination"]["evaluation"]) == ["toy_eval", "toy_valid"]
    assert ex["tasks"]["toy_tune"]["skipped"] == {"train: overlaps an evaluation task": 4}  # row 5 too ("Tune row 5")

    assert main(["mixture", "--data-dir", str(data), "--tokenizer", "none", "--k-min", "1", "--k-max", "2", "-q",
                 "--out", str(tmp_path / "cli")]) == 0
    assert "decontamination: dropped 4 of 36 tuning rows overlapping 1 of 1 evaluation tasks (13-grams / exact)" \
        in capsys.readouterr().out
    assert main(["mixture", "--data-dir", str(data), "--tokenizer", "none", "--k-min", "1", "--keep-contaminated", "-q",
                 "--out", str(tmp_path / "cli-kept")]) == 0
    assert "decontamination: kept 4 of 36 tuning rows" in capsys.readouterr().out


def _tree_hash(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_bytes_across_builds_and_hash_seeds(data, tmp_path):
    config = MixtureConfig(data_dir=str(data), k_min=1, k_max=2, tokenizer=None, max_per_task=12)
    build_mixture(config, tmp_path / "a", progress=False)
    build_mixture(config, tmp_path / "b", progress=False)
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    script = ("import sys; from symtune.mixture import MixtureConfig, build_mixture; "
              f"build_mixture(MixtureConfig(data_dir={str(data)!r}, k_min=1, k_max=2, tokenizer=None, max_per_task=12), "
              "sys.argv[1], progress=False)")
    for seed in ("1", "4242"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"h{seed}")], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        assert _tree_hash(tmp_path / f"h{seed}") == _tree_hash(tmp_path / "a")


def test_cli_overlap_table_and_json(data, tmp_path, capsys):
    out = tmp_path / "overlap.json"
    assert main(["overlap", "--data-dir", str(data), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "toy_tune" in printed and "3 of 20 (15.0%)" in printed and "1 of 6 (16.7%) test" in printed
    assert "Queries with a near-duplicate" in printed
    got = json.loads(out.read_text())
    assert got["flagged"] == {"toy_pairs": [0], "toy_tune": [0, 1, 4]} and got["overlapping_rows"] == 4
    assert [p["task"] for p in got["pools"]] == ["toy_eval"]
    # a tuning task named as an evaluation task: its held-out splits (it has none here: nothing to check)
    assert main(["overlap", "--data-dir", str(data), "--eval-tasks", "toy_valid", "--markdown"]) == 0
    assert "no tuning row overlaps an evaluation task" in capsys.readouterr().out
    assert main(["overlap", "--data-dir", str(data), "--exclude-tasks", "toy_vallid"]) == 2
    assert "did you mean toy_valid" in capsys.readouterr().err
