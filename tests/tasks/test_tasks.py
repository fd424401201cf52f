import json

import pytest

from symtune.cli import main
from symtune.tasks import TaskError, get_task, load_catalogue, load_rows, select_tasks

PAPER_TUNE = {"rte", "wnli", "qnli", "mnli", "snli", "cb", "sst2", "rotten_tomatoes", "tweet_eval_sentiment", "qqp",
              "mrpc", "paws", "copa", "piqa", "winogrande", "ag_news", "trec", "wsc", "tweet_eval_offensive",
              "tweet_eval_irony", "wic", "cola"}
PAPER_EVAL = {"subj", "tweet_eval_hate", "tweet_eval_stance_abortion", "tweet_eval_stance_atheism",
              "tweet_eval_stance_feminist", "tweet_eval_stance_hillary", "raft_ade_corpus_v2", "raft_overruling",
              "raft_semiconductor_org_types", "raft_terms_of_service", "raft_twitter_complaints"}


def test_builtin_catalogue_declares_the_paper_tasks_with_hub_sources():
    cat = load_catalogue()
    assert {n for n, s in cat.items() if s.role == "tune" and s.paper} == PAPER_TUNE
    assert {n for n, s in cat.items() if s.role == "eval"} == PAPER_EVAL
    local_only = {n for n, s in cat.items() if s.hub is None}
    assert local_only == {"mpqa"}  # no hub copy with a documented schema
    for s in cat.values():
        assert s.hub is None or set(s.hub.label_values.values()) == set(s.labels), s.name


# RAFT's own task files (ought/raft, data/<task>/task.json) list the class names in the order of the integer
# `Label` (1, 2, ...; 0 is "Unlabeled"); ADE's names are RAFT's wording of our labels.
RAFT_ORDER = {
    "raft_ade_corpus_v2": ["adverse drug event", "not adverse drug event"],  # ADE-related, not ADE-related
    "raft_overruling": ["not overruling", "overruling"],
    "raft_semiconductor_org_types": ["company", "research institute", "university"],
    "raft_terms_of_service": ["not potentially unfair", "potentially unfair"],
    "raft_twitter_complaints": ["complaint", "no complaint"],
}


def test_raft_hub_labels_follow_rafts_own_order():
    cat = load_catalogue()
    for name, order in RAFT_ORDER.items():
        assert {int(k): v for k, v in cat[name].hub.label_values.items()} == dict(enumerate(order, 1)), name


def test_raft_hub_labels_agree_with_rows_whose_label_is_known(data_dir):
    # RAFT's first train rows: "...we now explicitly overrule dupree." is Label 2; "North Carolina State Univ." Label 3
    cat = load_catalogue()
    rows = load_rows(cat["raft_overruling"], "train", data_dir).rows
    assert rows[0]["sentence"].endswith("overrule dupree.") and rows[0]["label"] == cat["raft_overruling"].hub.label_values[2]
    spec = cat["raft_semiconductor_org_types"]
    rows = load_rows(spec, "train", data_dir).rows
    assert rows[0]["organization"].startswith("North Carolina State Univ.") and rows[0]["label"] == spec.hub.label_values[3]


def test_every_local_task_is_in_the_catalogue(data_dir):
    """The real local copy agrees with the built-in specs (labels, inputs) and covers every role."""
    cat = load_catalogue(data_dir)
    local = {p.name for p in (data_dir / "tasks").iterdir() if (p / "task.json").exists()}
    assert local <= set(cat)
    assert len(select_tasks(cat, role="tune", data_dir=data_dir)) == 26
    assert len(select_tasks(cat, role="eval", data_dir=data_dir)) == 11


def test_cli_tasks_lists_roles_and_availability(task_data, capsys):
    assert main(["tasks", "--data-dir", str(task_data)]) == 0
    out = capsys.readouterr().out
    assert "raft_overruling" in out and "38 tasks, 38 available locally" in out
    line = next(x for x in out.splitlines() if x.startswith("subj "))
    assert "eval*" in line and "yes" in line


def test_fixture_data_is_what_make_data_writes(task_data, tmp_path):
    """tests/fixtures/data is generated, synthetic text only: regenerating it gives the same bytes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_data", task_data.parent / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.main(tmp_path / "data")

    def tree(d):
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert tree(tmp_path / "data") == tree(task_data), "rerun tests/fixtures/make_data.py"
    assert set(load_catalogue()) == {p.name for p in (task_data / "tasks").iterdir()}  # every built-in task


def test_unknown_task_suggests_near_names():
    with pytest.raises(TaskError, match="did you mean sst2"):
        get_task(load_catalogue(), "sst-2")


def _user_task(tmp_path, spec: dict, rows: list[dict], ext="jsonl"):
    d = tmp_path / "mytask"
    d.mkdir()
    if ext == "jsonl":
        (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif ext == "csv":
        import csv

        with (d / "train.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), d / "train.parquet")
    path = tmp_path / "mytask.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"local": "./mytask", **spec}))
    return path


SPEC = {"name": "mytask", "role": "extra", "labels": ["cold", "hot"], "input_fields": ["text"], "instruction": "Hot?"}
ROWS = [{"text": f"item {i}", "label": ["cold", "hot"][i % 2]} for i in range(12)]


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_user_adds_a_task_with_one_file(tmp_path, ext):
    path = _user_task(tmp_path, SPEC, ROWS, ext)
    cat = load_catalogue(spec_paths=[path])
    rows = load_rows(cat["mytask"], "train")
    assert len(rows.rows) == 12 and rows.rows[1] == {"text": "item 1", "label": "hot"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": ["hot"]}, "at least 2 classes"),
        ({"labels": ["hot", "Hot"]}, "repeats"),
        ({"role": "train"}, "field 'role'"),
        ({"input_fields": []}, "input_fields"),
        ({"colour": "red"}, "unknown field"),
        ({"input_template": "{nope}"}, "input_template"),
    ],
)
def test_malformed_spec_names_file_and_field(tmp_path, change, message):
    path = _user_task(tmp_path, {**SPEC, **change}, ROWS)
    with pytest.raises(TaskError, match=message) as e:
        load_catalogue(spec_paths=[path])
    assert str(path) in str(e.value)


def test_label_not_in_spec_names_file_line_and_value(tmp_path):
    path = _user_task(tmp_path, SPEC, ROWS + [{"text": "x", "label": "warm"}])
    spec = load_catalogue(spec_paths=[path])["mytask"]
    with pytest.raises(TaskError, match=r"train.jsonl:13: label 'warm' is not one of"):
        load_rows(spec, "train")


def test_empty_inputs_are_counted_skips(tmp_path):
    path = _user_task(tmp_path, SPEC, ROWS + [{"text": "  ", "label": "hot"}])
    rows = load_rows(load_catalogue(spec_paths=[path])["mytask"], "train")
    assert len(rows.rows) == 12 and rows.skipped == {"empty input": 1}


def test_missing_field_and_bad_json(tmp_path):
    path = _user_task(tmp_path, SPEC, [{"txt": "a", "label": "hot"}])
    with pytest.raises(TaskError, match=r"missing field\(s\) \['text'\]"):
        load_rows(load_catalogue(spec_paths=[path])["mytask"], "train")
    (tmp_path / "mytask" / "train.jsonl").write_text('{"text": "a", "label": "hot"}\n{oops\n')
    from symtune.tasks.sources import _CACHE

    _CACHE.clear()
    with pytest.raises(TaskError, match=r"train.jsonl:2: not valid JSON"):
        load_rows(load_catalogue(spec_paths=[path])["mytask"], "train")


def test_local_spec_disagreeing_with_builtin_is_an_error(tmp_path):
    d = tmp_path / "tasks" / "sst2"
    d.mkdir(parents=True)
    (d / "task.json").write_text(json.dumps({"name": "sst2", "role": "tune", "labels": ["bad", "good"], "input_fields": ["sentence"]}))
    with pytest.raises(TaskError, match="disagree with the built-in spec"):
        load_catalogue(tmp_path)


def test_user_task_in_a_relative_data_dir(tmp_path, monkeypatch):
    d = tmp_path / "d1" / "tasks" / "t1"
    d.mkdir(parents=True)
    (d / "task.json").write_text(json.dumps({"name": "t1", "role": "extra", "input_fields": ["text"], "labels": ["a", "b"],
                                             "instruction": "a or b?"}))  # fmt: skip
    (d / "train.jsonl").write_text("".join(json.dumps({"text": f"x{i}", "label": "ab"[i % 2]}) + "\n" for i in range(6)))
    monkeypatch.chdir(tmp_path)
    spec = load_catalogue("d1")["t1"]
    assert len(load_rows(spec, "train", "d1").rows) == 6


def _hub_spec(label_values):
    from symtune.tasks.spec import spec_from_dict

    return spec_from_dict({"name": "hubtask", "role": "extra", "input_fields": ["text"], "labels": ["neg", "pos"],
                           "instruction": "?", "hub": {"path": "user/ds", "splits": {"train": "train"},
                                                       "label_column": "label", "label_values": label_values}}, "t.yaml")  # fmt: skip


def test_hub_rows_without_a_mapping_are_counted_and_a_lost_class_is_an_error(monkeypatch):
    import datasets

    from symtune.tasks import sources

    rows = [{"text": f"t{i}", "label": i % 3 - 1} for i in range(9)]  # -1 (unlabelled), 0, 1
    monkeypatch.setattr(sources, "hub_unreachable", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    sources._CACHE.clear()
    got = load_rows(_hub_spec({0: "neg", 1: "pos"}), "train")
    assert len(got.rows) == 6 and got.skipped == {"label without a mapping (label_values)": 3}
    sources._CACHE.clear()
    with pytest.raises(TaskError, match=r"no user/ds train row maps to label\(s\) \['pos'\]"):
        load_rows(_hub_spec({0: "neg", 5: "pos"}), "train")
    sources._CACHE.clear()


def test_unreachable_hub_is_said_at_once(monkeypatch):
    import time

    from symtune.tasks import sources

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    sources.hub_unreachable.cache_clear()
    t0 = time.time()
    with pytest.raises(TaskError, match=r"hub http://127.0.0.1:9 is unreachable.*--data-dir PATH"):
        load_rows(_hub_spec({0: "neg", 1: "pos"}), "train")
    assert time.time() - t0 < 15
    sources.hub_unreachable.cache_clear()


SCRIPT_REPOS = ("ybisk/piqa", "CogComp/trec", "ought/raft")  # ship a loading script, which datasets>=4 refuses


def _write_hub_export(root, spec):
    """Lay out a spec's hub source the way the hub's parquet export is (<repo>/<config>/<split>/0000.parquet):
    one row per label value the spec maps, and one row whose label has no mapping."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    hub = spec.hub
    to_hub = {f: col for col, f in hub.columns.items()}
    keys = list(hub.label_values)
    unmapped = -1 if all(isinstance(k, int) for k in keys) else "unlabelled"
    rows = [{**{to_hub.get(f, f): f"{f} {i}" for f in hub.input_fields or spec.input_fields}, hub.label_column: k}
            for i, k in enumerate([*keys, unmapped])]
    for split in hub.splits.values():
        d = root / hub.path / (hub.name or "default") / split
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "0000.parquet")


def test_every_builtin_hub_source_maps_a_hub_shaped_export_onto_its_spec(tmp_path, monkeypatch):
    """The hub path of every built-in spec (column renames, label mapping, revision, config) read through
    `datasets` from a local directory laid out like the hub's parquet export."""
    import datasets

    from symtune.tasks import sources

    real_load = datasets.load_dataset
    calls = []

    def load_from_export(path, name=None, split=None, revision=None):
        calls.append((path, name, revision))
        files = str(tmp_path / path / (name or "default") / split / "*.parquet")
        return real_load("parquet", data_files={split: files}, split=split, cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(sources, "hub_unreachable", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", load_from_export)
    specs = [s for s in load_catalogue().values() if s.hub is not None]
    assert len(specs) >= 35
    for spec in specs:
        _write_hub_export(tmp_path, spec)
        for ours in spec.hub.splits:
            sources._CACHE.clear()
            got = load_rows(spec, ours)  # no data dir: the hub path
            assert {r["label"] for r in got.rows} == set(spec.labels), spec.name
            assert all(set(r) == {*spec.input_fields, "label"} for r in got.rows), spec.name
            assert got.skipped == {"label without a mapping (label_values)": 1}, spec.name
            assert got.source.startswith(f"hf://{spec.hub.path}/"), spec.name
    sources._CACHE.clear()
    revisions = {path: rev for path, _, rev in calls}
    for repo in SCRIPT_REPOS:
        assert revisions[repo] == "refs/convert/parquet", repo
    assert all(rev is None for path, rev in revisions.items() if path not in SCRIPT_REPOS)
