"""The report: files, a self-contained HTML, numbers equal to results.json, paired deltas, missing stages,
several runs side by side. One real evaluation (tiny random model) is the base; the "tuned" evaluation is
derived from it with known changes, so every delta is known."""

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from symtune.algorithmic.score import summarize as algo_summarize
from symtune.metrics import pct, summarize
from symtune.report import ReportError, build_report, load_run
from symtune.report.paired import icl_delta, paired_delta, queries_for_mde
from symtune.report.sections import with_ci
from symtune.results import Stats

TASKS = ["raft_overruling", "tweet_eval_stance_hillary"]


@pytest.fixture(scope="module")
def base_eval(tiny_model, task_data, tmp_path_factory) -> Path:
    """A real ICL evaluation of the tiny model, plus algorithmic results scored from made-up generations
    (half right) by the suite's own functions: generating them with the model would add ~10 s for nothing."""
    import torch

    from symtune.algorithmic import build_algorithmic_requests, score_algorithmic
    from symtune.evaluate import EvalConfig, evaluate
    from symtune.scoring import HFBackend

    out = tmp_path_factory.mktemp("eval_base")
    backend = HFBackend(*tiny_model, batch_size=8, identity={"backend": "hf", "model": "tiny-random-llama"})
    config = EvalConfig(out=str(out), data_dir=str(task_data), suite="icl", tasks=TASKS, limit=2, max_new_tokens=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model gains nothing from threads; on busy cores they cost 20x (spin-waits)
    try:
        results = evaluate(config, backend=backend, progress=False)
    finally:
        torch.set_num_threads(threads)
    plan = build_algorithmic_requests(task_data, limit=2, parts=["gen_list"], families=["take", "length"])
    gens = [" " + r.target if i % 2 else " [" for i, r in enumerate(plan.requests)]
    samples, tables = score_algorithmic(plan.requests, gens, plan.skipped)
    tables.config = plan.config
    results.algorithmic = tables
    (out / "results.json").write_text(results.to_json())
    with (out / "samples.jsonl").open("a") as f:
        f.write("".join(json.dumps(s) + "\n" for s in samples))
    return out


def _derive_tuned(base: Path, out: Path) -> None:
    """The base evaluation with every third sample made right, tables recomputed the way evaluate does."""
    res = json.loads((base / "results.json").read_text())
    samples = [json.loads(x) for x in (base / "samples.jsonl").read_text().splitlines()]
    for i, s in enumerate(samples):
        if i % 3 == 0 and "task" in s:
            s["correct"] = {m: True for m in s["correct"]}
            s["in_label_set"] = True
        elif i % 3 == 0:
            s.update(exact=True, parsed=True, malformed=False)
    chance = {t: st["chance"] for per in res["icl"]["per_task"].values() for t, st in per.items()}
    res["icl"] = summarize([s for s in samples if "task" in s], chance, seed=0).to_dict()
    groups = defaultdict(lambda: defaultdict(list))
    for s in samples:
        if "part" in s:
            groups[s["part"]][s["setting"]].append(s)
    res["algorithmic"]["parts"] = {
        part: {setting: {"overall": algo_summarize(rows).to_dict(),
                         "categories": {c: algo_summarize([r for r in rows if r["category"] == c]).to_dict() for c in {r["category"] for r in rows}},
                         "subtasks": {}} for setting, rows in by.items()}
        for part, by in groups.items()
    }  # fmt: skip
    res["model"] = {"backend": "hf", "model": "tiny-random-llama, tuned"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res))
    (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def _run_dir(root: Path, base: Path, tuned: Path | None, *, tune_log: str | None = "jsonl", mixture: bool = True) -> Path:
    """A run directory as `symtune run` writes it: state.json naming the stage directories."""
    run = root
    run.mkdir(parents=True, exist_ok=True)
    stages = {"eval_base": {"dir": str(base), "key": "b0", "status": "done"}}
    if tuned is not None:
        stages["eval_tuned"] = {"dir": str(tuned), "key": "t0", "status": "done"}
    if mixture:
        (run / "mixture").mkdir(parents=True)
        (run / "mixture" / "manifest.json").write_text(json.dumps(
            {"kind": "symtune-mixture", "total": 40, "counts": {"sst2": 20, "rte": 20}, "sha256": {"records.jsonl": "ab" * 32},
             "config": {"seed": 0, "k_min": 2, "k_max": 10}, "versions": {"symtune": "0.1.0"}}))  # fmt: skip
        stages["mixture"] = {"dir": "mixture", "key": "m0", "status": "done"}
    if tune_log:
        (run / "tune").mkdir(parents=True)
        log = [{"step": s, "loss": 3.0 / s} for s in range(1, 21)] + [{"step": s, "icl/symbol_acc": 0.4 + s / 100} for s in (0, 10, 20)]
        if tune_log == "jsonl":
            (run / "tune" / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log) + '{"step": 21, "lo')
        else:  # the Trainer's own record
            (run / "tune" / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 20}))
        stages["tune"] = {"dir": "tune", "key": "k0", "status": "done"}
    (run / "state.json").write_text(json.dumps({"config": {"model": "tiny", "preset": "cpu-small"}, "stages": stages}))
    return run


@pytest.fixture(scope="module")
def evals(base_eval, tmp_path_factory):
    tuned = tmp_path_factory.mktemp("eval_tuned")
    _derive_tuned(base_eval, tuned)
    return base_eval, tuned


@pytest.fixture(scope="module")
def report(evals, tmp_path_factory) -> tuple[Path, Path]:
    run = _run_dir(tmp_path_factory.mktemp("run"), *evals)
    return run, build_report([run])


def _table_after(md: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after the line starting with `heading`."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("|"))
    rows = []
    for x in lines[start + 2:]:
        if not x.startswith("|"):
            break
        rows.append([c.strip() for c in x.strip("|").split(" | ")])
    return rows


def test_report_files_and_self_contained_html(report):
    run, md = report
    assert md == run / "report.md" and (run / "report.html").is_file()
    figures = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert figures == ["algorithmic.png", "flipped.png", "loss.png", "table1.png"]
    assert all((run / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    html = (run / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == len(figures)
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', html), "external reference in the HTML"
    assert "<script" not in html and "<link" not in html
    text = md.read_text()
    assert all(f"](figures/{f})" in text for f in figures)
    assert "## How to read this" in text and "likely rule" in text and "42.4%" in text


def test_table1_cells_equal_results_json(report, evals):
    run, md = report
    base, tuned = (json.loads((d / "results.json").read_text())["icl"]["summary"] for d in evals)
    text = md.read_text()
    for heading, m in (("### Rank accuracy", "acc"), ("### Generation accuracy", "gen_acc")):
        rows = {r[0]: r for r in _table_after(text, heading)}
        assert list(rows) == ["natural+instr", "natural", "symbol+instr", "symbol", "flipped"]
        for s, row in rows.items():
            chance, b, t, d = row[3], row[4], row[5], row[6]
            assert chance == pct(base[s]["chance"])
            lo, hi = base[s][f"{m}_ci95"]
            assert b == f"{pct(base[s][m])} [{pct(lo)}, {pct(hi)}]"
            assert t.startswith(pct(tuned[s][m]) + " [")
            # every query is paired, so Δ is exactly the difference of the two macro averages
            assert d.split(" [")[0] == f"{100 * (tuned[s][m] - base[s][m]):+.1f}"
    assert rows["natural"][1:3] == ["✓", "✗"] and rows["symbol+instr"][1:3] == ["✗ (symbols)", "✓"]


def test_paired_delta_equals_difference_and_covers_it(evals):
    base, tuned = (load_run(d) for d in evals)
    for s in ("natural", "symbol", "flipped"):
        d = icl_delta(base.base.rows("icl", s), tuned.base.rows("icl", s), "acc")
        want = tuned.base.results.icl.summary[s].acc - base.base.results.icl.summary[s].acc
        assert d["delta"] == pytest.approx(want) and d["unpaired"] == 0
        assert d["ci95"][0] <= d["delta"] <= d["ci95"][1]


def test_paired_delta_math():
    def rows(values, task="t"):
        return [{"id": f"{task}/{i}", "task": task, "query": i, "correct": {"acc": v}} for i, v in enumerate(values)]

    same = icl_delta(rows([1, 0, 1, 0]), rows([1, 0, 1, 0]), "acc")
    assert same["delta"] == 0 and same["ci95"] == [0, 0]
    up = icl_delta(rows([0] * 5), rows([1] * 5), "acc")
    assert up["delta"] == 1 and up["ci95"] == [1, 1]
    # macro average over tasks: task a +1 (4 queries), task b 0 (2 queries) -> +0.5, not +4/6
    mixed = icl_delta(rows([0] * 4, "a") + rows([1, 1], "b"), rows([1] * 4, "a") + rows([1, 1], "b"), "acc")
    assert mixed["delta"] == pytest.approx(0.5) and mixed["groups"] == 2
    # queries in only one evaluation are left out and counted
    part = icl_delta(rows([0, 0, 0]), rows([1, 1]), "acc")
    assert part["pairs"] == 2 and part["unpaired"] == 1
    assert paired_delta(rows([1]), rows([1], "other"), lambda s: s["correct"]["acc"], lambda s: "", lambda s: s["id"]) is None


def test_cells_with_several_exemplar_draws():
    stats = Stats(n=40, acc=0.5, ci95={"acc": [0.25, 0.75]}, trials={"acc": [0.4, 0.6]}, trial_std={"acc": 0.1414})
    assert with_ci(stats, "acc") == "50.0 [25.0, 75.0] sd 14.1 over 2 draws"
    assert with_ci(Stats(n=0), "acc") == with_ci(None, "acc") == "-"


def test_per_task_and_algorithmic_cells(report, evals):
    run, md = report
    base, tuned = (json.loads((d / "results.json").read_text()) for d in evals)
    text = md.read_text()
    rows = {r[0]: r for r in _table_after(text, "### Rank accuracy\n\n| task")}
    for i, s in enumerate(["natural+instr", "natural", "symbol+instr", "symbol", "flipped"], start=1):
        b, t = base["icl"]["per_task"][s].get("raft_overruling"), tuned["icl"]["per_task"][s].get("raft_overruling")
        assert rows["raft_overruling"][i] == f"{pct(b['acc'])} → {pct(t['acc'])}"
    assert rows["tweet_eval_stance_hillary"][5] == "n/a"  # three labels: not flipped
    algo = {(r[1], r[2]): r for r in _table_after(text, "## Algorithmic reasoning") if r[0] == "gen_list"}
    b = base["algorithmic"]["parts"]["gen_list"]["natural"]["overall"]
    t = tuned["algorithmic"]["parts"]["gen_list"]["natural"]["overall"]
    row = algo[("natural", "overall")]
    assert row[3] == str(b["n"]) and row[4] == f"{pct(b['exact_acc'])} → {pct(t['exact_acc'])}"
    assert row[5].startswith(f"{100 * (t['exact_acc'] - b['exact_acc']):+.1f} [")
    assert {c for s, c in algo} == {"removing", "counting", "overall"}


def test_training_section(report):
    run, md = report
    text = md.read_text()
    assert "`train_log.jsonl` (23 entries)" in text  # the torn last line is dropped
    assert "loss: first 3.0000, last 0.1500" in text and "`icl/symbol_acc` during training" in text
    assert "records.jsonl sha256: `" + "ab" * 32 in text and "Both evaluations read byte-identical task data" in text


def test_missing_stages_are_stated(evals, tmp_path):
    run = _run_dir(tmp_path / "run", evals[0], None, tune_log=None, mixture=False)
    text = build_report([run]).read_text()
    assert "- tune: not part of this run" in text and "- eval_tuned: not part of this run" in text
    assert "No tuning stage to show" in text and "No tuned evaluation in this run" in text
    assert "No mixture manifest" in text
    assert sorted(p.name for p in (run / "figures").glob("*.png")) == ["algorithmic.png", "flipped.png", "table1.png"]
    # a stage that state.json names but whose directory is gone
    state = json.loads((run / "state.json").read_text())
    state["stages"]["tune"] = {"dir": "tune", "key": "x", "status": "running"}
    (run / "state.json").write_text(json.dumps(state))
    assert "tune: status 'running', directory" in build_report([run]).read_text()
    # a bare evaluation directory
    text = build_report([evals[0]], out=tmp_path / "bare").read_text()
    assert "an evaluation directory, not a run" in text and "evaluated model % [95% CI]" in text
    with pytest.raises(ReportError, match="neither a run directory"):
        build_report([tmp_path / "run" / "figures"])


def test_answers_outside_the_label_set(report, evals):
    """The most frequent answers naming no label, per model, counted as generation accuracy normalises them."""
    from collections import Counter

    from symtune.scoring.rules import normalize_answer

    rows = _table_after(report[1].read_text(), "## Answers outside the label set")
    for label, path in zip(("base", "tuned"), evals):
        samples = [json.loads(x) for x in (path / "samples.jsonl").read_text().splitlines()]
        answered = [s for s in samples if "task" in s]
        outside = Counter(normalize_answer(s["generation"]) for s in answered if not s["in_label_set"])
        assert outside, "the tiny model answers outside the label set: the section has something to show"
        got = [(r[1].strip("`") if r[1] != "(empty)" else "", int(r[2]), float(r[3])) for r in rows if r[0] == label]
        want = sorted(outside.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        assert [(a, n) for a, n, _ in got] == want
        assert [p for *_, p in got] == [round(100 * n / len(answered), 1) for _, n in want]


def test_evaluation_without_generation(evals, tmp_path):
    """`symtune eval --no-generate`: generation accuracy is stated as not scored, rank accuracy is there."""
    res = json.loads((evals[0] / "results.json").read_text())
    samples = [json.loads(x) for x in (evals[0] / "samples.jsonl").read_text().splitlines()]
    icl = [s for s in samples if "task" in s]
    for s in icl:
        s["correct"]["gen_acc"], s["in_label_set"] = None, None
    chance = {t: st["chance"] for per in res["icl"]["per_task"].values() for t, st in per.items()}
    res["icl"] = summarize(icl, chance).to_dict()
    for d in ("b", "t"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "results.json").write_text(json.dumps(res))
        (tmp_path / d / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    text = build_report([], out=tmp_path / "out", base=tmp_path / "b", tuned=tmp_path / "t").read_text()
    assert "Not scored in this run (the evaluation ran without generation)" in text
    assert "## Answers outside the label set" not in text  # nothing was generated
    assert _table_after(text, "### Rank accuracy")[1][6] == "+0.0 [+0.0, +0.0]"


def test_trainer_state_log_history_is_read(evals, tmp_path):
    run = _run_dir(tmp_path / "run", *evals, tune_log="trainer_state")
    text = build_report([run]).read_text()
    assert "`trainer_state.json` (23 entries)" in text and (run / "figures" / "loss.png").is_file()
    # rebuilt without the tune stage: the old loss figure goes, other files in figures/ stay
    (run / "figures" / "mine.png").write_bytes(b"x")
    state = json.loads((run / "state.json").read_text())
    del state["stages"]["tune"]
    (run / "state.json").write_text(json.dumps(state))
    build_report([run])
    assert not (run / "figures" / "loss.png").exists() and (run / "figures" / "mine.png").exists()


def test_several_runs_side_by_side(evals, tmp_path):
    a = _run_dir(tmp_path / "a", *evals)
    b = _run_dir(tmp_path / "b", evals[1], evals[0], tune_log=None)  # the other way round
    md = build_report([a, b, evals[0]], out=tmp_path / "cmp", base=evals[0], tuned=evals[1])
    text = md.read_text()
    assert len(re.findall(r"^## Run \d+: ", text, re.M)) == 4 and "## Runs side by side" in text
    head = _table_after(text, "### Rank accuracy")
    assert len(head[0]) == 2 + 3 + 3 + 1 + 3
    rows = {r[0]: r for r in head}
    for s in rows:  # run b swaps base and tuned: the opposite Δ
        assert float(rows[s][4].split(" [")[0]) == -float(rows[s][7].split(" [")[0])
        assert rows[s][9:11] == rows[s][2:4]  # base=/tuned= pair the same evaluations as run a
    figs = {p.name for p in (tmp_path / "cmp" / "figures").glob("*.png")}
    assert "runs.png" in figs and "1-a-table1.png" in figs and "2-b-table1.png" in figs
    assert "deltas.png" in figs and "](figures/deltas.png)" in text  # the Δ figure of every paired run
    named = build_report([a, b], out=tmp_path / "named", names=["first", None])
    assert "## Run 1: first" in named.read_text() and "## Run 2: b" in named.read_text()
    with pytest.raises(ReportError, match="one name per run"):
        build_report([a, b], out=tmp_path / "bad", names=["first"])
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == len(figs)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (Debian: apt-get install -y chromium)")
def test_html_renders_with_images_in_headless_chromium(report, tmp_path):
    """The page renders offline and its figures show: the screenshot holds the bars' blue, which only the
    embedded images contain."""
    import numpy as np
    from matplotlib.image import imread

    run, _ = report
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1280,6000", (run / "report.html").resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file()
    img = imread(shot)[..., :3]
    blue = np.all(np.abs(img - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.03, axis=-1)
    assert blue.sum() > 2000


@pytest.mark.parametrize("answer", ["not entailment", "a`b", "`x", "x``y`", "<b>|&", "**no**"])
def test_answers_table_shows_any_answer_verbatim(answer):
    """An answer is shown as a code span in the markdown and the HTML whatever it holds (backticks included)."""
    import html

    from symtune.report.answers import _code
    from symtune.report.document import _inline

    assert _inline(f"said {_code(answer)} **twice**") == (
        f"said <code>{html.escape(answer, quote=False)}</code> <strong>twice</strong>")


def test_power_columns_and_sizing_from_the_cli(evals, tmp_path, capsys):
    from symtune.cli import main

    run = _run_dir(tmp_path / "run", *evals)
    assert main(["report", str(run), "--target-mde", "5"]) == 0
    printed = capsys.readouterr().out
    text = (run / "report.md").read_text()
    d = icl_delta(load_run(evals[0]).base.rows("icl", "symbol"), load_run(evals[1]).base.rows("icl", "symbol"), "gen_acc")
    row = {r[0]: r for r in _table_after(text, "### Generation accuracy")}["symbol"]
    assert row[7] == f"{100 * d['mde80']:.1f}"  # the MDE column is the paired Δ's, in points
    assert row[8].startswith(f"[{100 * d['ci95_tasks'][0]:+.1f}, ") and "MDE" in row[8]
    need = str(queries_for_mde(d["queries"], 100 * d["mde80"], 5.0))
    sized = {r[0]: r for r in _table_after(text, "## Sizing the next evaluation")}
    assert sized["symbol"][-1] == need
    assert any(line.split()[:1] == ["symbol"] and line.split()[-1] == need for line in printed.splitlines())
