"""`symtune study`: several tuning recipes against one base model, chosen on a validation suite, then tested.

A study config names a base model, the shared `mixture` and `tune` sections, the recipes (each a set of
overrides of those sections, listed by hand or expanded from a `grid`), and two evaluation sections:

    validation  a suite that is neither tuned on nor the final test (every recipe is screened on it)
    test        the held-out suite, run only for the chosen recipe(s), the controls and the base model
    diagnostic  optional: new queries of tasks that *are* in the mixture, for every screened recipe — does
                the recipe teach in-context learning on the tasks it saw, whether or not it transfers?
                Never used for selection.

Each recipe is a `symtune run` (pipeline.py) whose stages live in the study's one `stages/` directory, so
what two recipes share is done once: the mixture when their mixture sections agree, the base model's
evaluation always. Phases, each resumable (a finished stage is skipped, an interrupted one resumes):

    1. validation: every recipe, in the order given
    2. selection:  the recipe(s) with the best validation score (the rule is in the config, fixed before any
       result is seen; controls are never selected) -> selection.json
    3. test:       the selected recipe(s) and the controls on the test suite; a control is tuned exactly like
       the (first) selected recipe except for its own overrides (e.g. `labels: natural`), so it differs from
       the winner only in what it controls for

After every recipe the study report (report.md/.html, report/study.py) is rewritten, so results appear as
they land. `save_results` copies a study without what can be made again (weights, checkpoints, mixture
records, caches): a later study over that copy skips every finished recipe.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .configs import config_file, read_yaml_mapping
from .files import gzip_in_place, publish_dir, write_atomic
from .pipeline import run_pipeline
from .report.study import build_study_report
from .results import EvalResults, Stats
from .runconfig import PipelineError, RunConfig, check_sections

PHASES = ("validation", "test")
# What a saved study leaves out: it can be made again (deterministically) when a stage still to run reads it
NOT_RESULTS = ("checkpoints", "*.safetensors", "*.bin", "dataset", "records.jsonl", ".cache", "cache*.jsonl", "tokenizer*")
SECTIONS = ("mixture", "tune")


class StudyError(PipelineError):
    """A study config that cannot be used; the message names the field and what to do."""


@dataclass
class Recipe:
    name: str
    mixture: dict = field(default_factory=dict)  # overrides of the study's mixture section
    tune: dict = field(default_factory=dict)  # overrides of the study's tune section
    control: bool = False  # a control: always tested, never selected
    note: str = ""


@dataclass
class StudyConfig:
    """See the module docstring. `select`: {"metric": gen_acc | acc, "settings": [...], "top": N} — the
    validation score of a recipe is the mean over those settings of (tuned - base) macro-average accuracy;
    `finalists` (recipe names) replaces the rule by an explicit choice, recorded as such."""

    out: str = "runs/study"
    model: str = "smollm2-135m"
    data_dir: str | None = None
    seed: int = 0
    mixture: dict = field(default_factory=dict)
    tune: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    diagnostic: dict = field(default_factory=dict)
    recipes: list[Recipe] = field(default_factory=list)
    select: dict = field(default_factory=lambda: {"metric": "gen_acc", "settings": ["symbol", "flipped"], "top": 1})
    finalists: list[str] | None = None

    def control_on(self, control: Recipe, finalist: Recipe) -> Recipe:
        """A control tuned exactly like the finalist but for the control's own overrides (its labels). A
        finalist that keeps a share of its prompts natural (natural_fraction) keeps it under the random-label
        control (only its symbol prompts get inconsistent labels); under the natural-label control every prompt
        is natural, so the share goes."""
        mixture = {**finalist.mixture, **control.mixture}
        if {**self.mixture, **mixture}.get("labels") == "natural":
            mixture["natural_fraction"] = 0.0
        return Recipe(control.name, mixture, {**finalist.tune, **control.tune}, True,
                      f"{control.note} (on top of {finalist.name}'s settings)".strip())

    def run_config(self, recipe: Recipe, phase: str) -> RunConfig:
        return RunConfig(
            out=str(Path(self.out) / phase / recipe.name),
            model=self.model,
            data_dir=self.data_dir,
            seed=self.seed,
            mixture={**self.mixture, **recipe.mixture},
            tune={**self.tune, **recipe.tune},
            eval=copy.deepcopy(getattr(self, phase)),
            stages_dir=str(Path(self.out) / "stages"),
        )


def _recipe(name: str, raw, where: str) -> Recipe:
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: recipe {name!r} must be a mapping of mixture/tune overrides, got {raw!r}")
    bad = sorted(set(raw) - {"mixture", "tune", "control", "note"})
    if bad:
        raise StudyError(f"{where}: recipe {name!r} has unknown field(s) {bad}; a recipe holds mixture:, tune:, "
                         "control:, note:")
    for s in SECTIONS:
        if not isinstance(raw.get(s, {}), dict):
            raise StudyError(f"{where}: recipe {name!r}: {s} must be a mapping of options")
    return Recipe(name, dict(raw.get("mixture") or {}), dict(raw.get("tune") or {}), bool(raw.get("control")),
                  str(raw.get("note") or ""))


def expand_grid(grid: dict, where: str) -> list[Recipe]:
    """{"tune.learning_rate": [2e-5, 1e-4], "mixture.k_max": [4, 10]} -> one recipe per combination, named
    "learning_rate=2e-05,k_max=4" (in the order of the product, first axis slowest)."""
    if not grid:
        return []
    axes = []
    for key, values in grid.items():
        section, _, option = str(key).partition(".")
        if section not in SECTIONS or not option:
            raise StudyError(f"{where}: grid axis {key!r} must be 'mixture.<option>' or 'tune.<option>'")
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}: grid axis {key!r} needs a non-empty list of values")
        axes.append((section, option, values))
    out = []
    for combo in itertools.product(*(values for _, _, values in axes)):
        r = Recipe(",".join(f"{option}={v}" for (_, option, _), v in zip(axes, combo)))
        for (section, option, _), v in zip(axes, combo):
            getattr(r, section)[option] = v
        out.append(r)
    return out


def load_study_config(path: str | Path, **overrides) -> StudyConfig:
    path = config_file(path)
    raw = read_yaml_mapping(path, "study config", StudyError)
    known = set(StudyConfig.__dataclass_fields__) | {"grid"}
    bad = sorted(set(raw) - known)
    if bad:
        raise StudyError(f"{path}: unknown field(s) {bad}; known: {sorted(known)}")
    recipes_raw = raw.pop("recipes", None) or {}
    if not isinstance(recipes_raw, dict):
        raise StudyError(f"{path}: recipes must be a mapping name -> {{mixture:, tune:, control:, note:}}")
    recipes = [_recipe(str(n), r or {}, str(path)) for n, r in recipes_raw.items()]
    recipes += expand_grid(raw.pop("grid", None) or {}, str(path))
    raw.update({k: v for k, v in overrides.items() if v is not None})
    config = StudyConfig(**raw, recipes=recipes)
    check_study(config, str(path))
    return config


def check_study(config: StudyConfig, where: str = "study") -> None:
    """Every recipe's run config is built and checked before anything runs (typos fail at once)."""
    names = [r.name for r in config.recipes]
    if not names:
        raise StudyError(f"{where}: no recipes; list them under recipes: or grid:")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"{where}: recipe name(s) {dup} appear twice")
    for phase in PHASES:
        if not getattr(config, phase):
            raise StudyError(f"{where}: the {phase} section is empty; give its evaluation options (tasks, settings, limit, ...)")
    metric = config.select.get("metric", "gen_acc")
    if metric not in ("gen_acc", "acc"):
        raise StudyError(f"{where}: select.metric must be gen_acc or acc, got {metric!r}")
    if config.finalists is not None:
        unknown = sorted(set(config.finalists) - set(names))
        if unknown:
            raise StudyError(f"{where}: finalists {unknown} are not recipes; recipes: {names}")
    for r in config.recipes:
        for phase in PHASES + (("diagnostic",) if config.diagnostic else ()):
            try:
                check_sections(config.run_config(r, phase), f"{where}: recipe {r.name!r} ({phase})")
            except PipelineError as e:
                raise StudyError(str(e)) from None


def validation_scores(config: StudyConfig) -> dict[str, dict]:
    """{recipe: {"score", "per_setting": {setting: delta}}} for recipes whose validation run finished."""
    metric = config.select.get("metric", "gen_acc")
    settings = config.select.get("settings", ["symbol", "flipped"])
    out = {}
    for r in config.recipes:
        summaries = _summaries(Path(config.out) / "validation" / r.name)
        if summaries is None:
            continue
        base, tuned = summaries
        per = {}
        for s in settings:
            b, t = (base[s].value(metric) if s in base else None), (tuned[s].value(metric) if s in tuned else None)
            if b is None or t is None:
                break
            per[s] = t - b
        else:
            out[r.name] = {"score": sum(per.values()) / len(per), "per_setting": per}
    return out


def _summaries(run_dir: Path) -> tuple[dict[str, Stats], dict[str, Stats]] | None:
    state_path = run_dir / "state.json"
    if not state_path.is_file():
        return None
    stages = json.loads(state_path.read_text()).get("stages", {})
    got = []
    for name in ("eval_base", "eval_tuned"):
        entry = stages.get(name) or {}
        results = run_dir / entry.get("dir", "-") / "results.json"
        if entry.get("status") != "done" or not results.is_file():
            return None
        icl = EvalResults.load(results).icl
        got.append(icl.summary if icl else {})
    return got[0], got[1]


def select(config: StudyConfig) -> dict:
    """The finalists, by the config's rule over finished validation runs (or its explicit list)."""
    scores = validation_scores(config)
    candidates = [r.name for r in config.recipes if not r.control]
    missing = [n for n in candidates if n not in scores]
    if config.finalists is not None:
        chosen, rule = list(config.finalists), "named (finalists: in the study config, or --finalists), not selected"
    else:
        if missing:
            raise StudyError(f"cannot select yet: validation not finished for {missing}; run the validation phase first")
        top = int(config.select.get("top", 1))
        ranked = sorted(candidates, key=lambda n: (-scores[n]["score"], candidates.index(n)))
        chosen = ranked[:top]
        rule = (f"highest mean validation Δ {config.select.get('metric', 'gen_acc')} over "
                f"{', '.join(config.select.get('settings', ['symbol', 'flipped']))}, top {top}")
    return {"finalists": chosen, "controls": [r.name for r in config.recipes if r.control], "rule": rule,
            "scores": scores}


def write_report(config: StudyConfig) -> Path:
    """The study report (report.md, report.html, figures/) from what has finished; returns the path of report.md."""
    return build_study_report(config, validation_scores(config))


def run_study(config: StudyConfig, phases=PHASES, only: list[str] | None = None, progress: bool = True, say=print) -> dict:
    """Run (or resume) the phases; returns the selection (None before the test phase)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "study.yaml", yaml.safe_dump(_as_yaml(config), sort_keys=False))
    by_name = {r.name: r for r in config.recipes}
    unknown = sorted(set(only or ()) - set(by_name))
    if unknown:
        raise StudyError(f"--only names unknown recipe(s) {unknown}; recipes: {list(by_name)}")
    selection = None
    if "validation" in phases:
        todo = [r for r in config.recipes if not r.control and (not only or r.name in only)]
        for i, r in enumerate(todo, 1):
            say(f"=== study {out.name}: validation {i}/{len(todo)}: {r.name}")
            run_pipeline(config.run_config(r, "validation"), progress=progress, say=say)
            if config.diagnostic:
                say(f"=== study {out.name}: diagnostic (seen tasks) {i}/{len(todo)}: {r.name}")
                run_pipeline(config.run_config(r, "diagnostic"), progress=progress, say=say)
            write_report(config)
    if "test" in phases:
        selection = select(config)
        write_atomic(out / "selection.json", json.dumps(selection, indent=2) + "\n")
        first = by_name[selection["finalists"][0]]
        todo = [by_name[n] for n in selection["finalists"]] + [config.control_on(by_name[n], first) for n in selection["controls"]]
        todo = [r for r in todo if not only or r.name in only]
        say(f"=== study {out.name}: selected {selection['finalists']} ({selection['rule']}); testing with controls {selection['controls']}")
        for i, r in enumerate(todo, 1):
            say(f"=== study {out.name}: test {i}/{len(todo)}: {r.name}")
            run_pipeline(config.run_config(r, "test"), progress=progress, say=say)
            write_report(config)
    path = write_report(config)
    say(f"study report: {path}")
    return selection


def _as_yaml(config: StudyConfig) -> dict:
    d = asdict(config)
    d["recipes"] = {r.pop("name"): r for r in d["recipes"]}
    return d


__all__ = ["Recipe", "StudyConfig", "StudyError", "expand_grid", "load_study_config", "run_study", "select",
           "validation_scores", "write_report"]


def save_results(config: StudyConfig, dest: str | Path) -> Path:
    """Copy the study directory to `dest` without NOT_RESULTS: states, configs, evaluation results and samples
    (as samples.jsonl.gz), training logs, selection and reports (a few MB). `symtune study` with `--out` a copy of `dest` skips every
    finished recipe; a stage still to run that reads a left-out output (a finalist's weights) redoes it."""
    src, dest = Path(config.out), Path(dest)
    if not (src / "study.yaml").is_file():
        raise StudyError(f"{src} holds no study (no study.yaml); run `symtune study` first")
    if dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents:
        raise StudyError(f"--save-results {dest}: choose a directory outside the study ({src})")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*NOT_RESULTS))
    for samples in sorted(tmp.rglob("samples.jsonl")):
        gzip_in_place(samples)  # per-query samples compress ~10x; the report reads either form
    publish_dir(tmp, dest)
    return dest
