"""A study file (YAML): arms x seeds, the shard sets they train on, and how runs are evaluated.

Parsed once into a `Study` through the schema in schema.py (typed, strict, known keys only: a typo
must not silently change a study), then checked across sections here.
Paths inside a study (shard-set inputs, eval data, a recipe given as a file) are relative to the
current working directory, which is meant to be the repository root, like every command in the
README. Results and the report live in the study file's own folder (or `results`, e.g. a folder
under out/ for a study whose results are not meant to be committed); run folders and shards under
`output` (default out/studies/NAME, gitignored).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from gcl.eval.study.datafiles import DataSpec, DataSpecError, overlap, same_file
# the schema's names other modules import from here too (MERGE_KEY, StudyError, EvalSpec, Decision)
from gcl.eval.study.schema import (MERGE_KEY, Decision, EvalSpec, MergeSet, StudyError,  # noqa: F401
                                   SynthOptions, parse_study_file)
from gcl.yamlsafe import read_shared_file
from gcl.shardset import OutputLayout


@dataclass
class Arm:
    name: str
    shards: str  # a shard_sets name
    x: float | None  # value on the plot's x axis (else read from plot.x in the merged recipe)
    recipe: str | None  # this arm's base recipe instead of train.recipe
    overrides: dict  # gcl-train recipe keys over the study's train defaults
    series: str | None = None  # the plot panel (and x-axis title) of a sweep; None: plot.label's panel
    control: str | None = None  # this arm's own compute-matched control (e.g. 2-view arms: hand2); None: the study's


@dataclass
class Study:
    name: str
    folder: Path  # the study file's folder: results JSONs, results.md, results.png
    seeds: list[int]
    control: str
    eval: EvalSpec
    shard_sets: dict[str, dict]  # name -> its options as written (checked by the schema; what digests hash)
    train: dict  # recipe keys shared by every arm (minus 'recipe')
    recipe: str  # base recipe: bundled name (cifar10/simclr) or YAML path
    arms: dict[str, Arm]
    output: Path  # run folders and shard sets
    plot_x: str | None = None
    plot_label: str | None = None
    decision: Decision = field(default_factory=Decision)
    note: str | None = None  # said at the top of results.md and at the end of every sitting
    merged: dict = field(default_factory=dict)  # arm -> merged recipe, filled by load_study
    synth: dict = field(default_factory=dict)  # shard set -> its typed SynthOptions or MergeSet (what runs)

    def control_of(self, arm: str) -> str | None:
        """The arm `arm` is paired against: its own control, else the study's (None for the study's control)."""
        if arm == self.control:
            return None
        return self.arms[arm].control or self.control

    def screened_arms(self) -> list[str]:
        """The arms a selection chooses from: paired against a control, and no arm's control themselves."""
        controls = {self.control_of(a) for a in self.arms}
        return [a for a in self.arms if self.control_of(a) is not None and a not in controls]

    def run_name(self, arm: str, seed: int) -> str:
        return f"{arm}-s{seed}"

    def result_path(self, arm: str, seed: int) -> Path:
        return self.folder / "runs" / f"{self.run_name(arm, seed)}.json"

    def failed_path(self, arm: str, seed: int) -> Path:
        return self.folder / "runs" / f"{self.run_name(arm, seed)}.failed.json"

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.output / "runs" / self.run_name(arm, seed)

    def shard_dir(self, set_name: str) -> Path:
        return self.output / "shards" / set_name

    def manifest_path(self, set_name: str) -> Path:
        return Path(OutputLayout(str(self.shard_dir(set_name)), set_name).manifest)

    def set_options(self, set_name: str) -> dict:
        """What a shard set is made with: its gcl-synth options, or for a merged set the options of
        each set it merges (so a changed source makes the merged set, and its arms, stale)."""
        options = self.shard_sets[set_name]
        if MERGE_KEY not in options:
            return options
        return {MERGE_KEY: {source: self.shard_sets[source] for source in options[MERGE_KEY]}}

    def build_order(self, set_names) -> list[str]:
        """The sets to make for `set_names`, each merged set after the sets it merges."""
        order: list[str] = []
        for name in sorted(set_names):
            for needed in [*self.shard_sets[name].get(MERGE_KEY, []), name]:
                if needed not in order:
                    order.append(needed)
        return order

    def digest(self, arm: str) -> str:
        """What a result depends on besides the seed: the merged recipe and its shard set's options."""
        a = self.arms[arm]
        blob = json.dumps({"recipe": self.merged[arm], "shard_set": self.set_options(a.shards)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def deep_merge(base, override):
    """Mappings merge key by key; anything else is replaced. One exception, for recipes'
    `augmentations` (a list of mappings, one per view position): a mapping merged onto a list of mappings
    updates every entry, so `augmentations: {crop_size: 16}` changes the size of all views."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(override, dict) and base and all(isinstance(b, dict) for b in base):
        return [deep_merge(b, override) for b in base]
    return copy.deepcopy(override)


def recipe_file(spec: str) -> Path:
    """A YAML path, or a recipe bundled with gcl-train (cifar10/simclr), found on disk by path:
    the eval app never imports gcl.train, so we ask importlib where that package lives."""
    p = Path(spec)
    if p.is_file():
        return p
    name = spec[len("recipes/"):] if spec.startswith("recipes/") else spec
    name = name if name.endswith(".yaml") else name + ".yaml"
    found = importlib.util.find_spec("gcl.train")
    for folder in (found.submodule_search_locations or []) if found else []:
        bundled = Path(folder) / "recipes" / name
        if bundled.is_file():
            return bundled
    raise StudyError(f"recipe {spec!r} not found: give a YAML path or a bundled name such as cifar10/simclr")


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping read by the core's loader for shared files (gcl.yamlsafe: size, alias-expansion,
    duplicate-key and depth caps); every failure is one StudyError line naming `what` and the file."""
    data = read_shared_file(path, what, StudyError)
    if not isinstance(data, dict):
        raise StudyError(f"{what} {path} must be a YAML mapping")
    return data


def data_file(spec: str | None) -> str | None:
    """The file of a data spec (FILE or FILE[A:B])."""
    return DataSpec.parse(spec).path if spec else None


def _spec(spec: str | None, limit: int | None = None) -> DataSpec | None:
    return DataSpec.parse(spec).limited(limit) if spec else None


def pretraining_rows(options: SynthOptions) -> DataSpec | None:
    """The input rows a shard set may read: the first `limit`, or with per_class the rows up to the
    last one the per-class selection can take (from the labels, when the file can be read now;
    else all of them). None when the set reads gcl-synth's default input."""
    if options.input is None:
        return None
    stop = options.limit
    if options.per_class is not None:
        stop = _per_class_stop(options.input, options.per_class)
    return DataSpec(options.input, None, stop)


def _per_class_stop(path: str, per_class: int) -> int | None:
    """1 + the last row of the first `per_class` images of each class of a labelled .npz (None: unknown)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            labels = np.asarray(data["labels"]).ravel()
    except Exception:  # noqa: BLE001 - unreadable here: the check then assumes every row is read
        return None
    stop = 0
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        stop = max(stop, int(rows[min(per_class, len(rows)) - 1]) + 1)
    return stop


def check_data_identity(spec: EvalSpec, shard_sets: dict[str, SynthOptions | MergeSet]) -> None:
    """Queries are never images their bank holds or pretraining saw, and validation is held out of
    the test split; files compare by identity (real path, content), rows by range."""
    try:
        test = _spec(spec.test, spec.limit_test)
        bank = _spec(spec.bank, spec.limit_bank)
        queries = _spec(spec.val_queries)
        val_bank = _spec(spec.val_bank) or _spec(spec.bank)
    except DataSpecError as exc:
        raise StudyError(f"eval: {exc}") from None
    if test and bank and overlap(bank, test):
        raise StudyError(f"eval: bank {spec.bank} and test {spec.test} share images (the same rows of the same "
                         "file); every query would find itself")
    if queries is not None:
        if spec.test and same_file(spec.test and test.path, queries.path):
            raise StudyError("eval: val_queries come from the test file; validation must be held out of the test split")
        if overlap(val_bank, queries):
            raise StudyError(f"eval: val_bank {spec.val_bank or spec.bank} overlaps val_queries {spec.val_queries}; "
                             "every query would find itself")
    for name, options in shard_sets.items():
        rows = pretraining_rows(options) if isinstance(options, SynthOptions) else None
        for what, queried in (("val_queries", queries), ("test", test)):
            if rows is not None and queried is not None and overlap(rows, queried):
                read = "every row" if rows.stop is None else f"rows 0-{rows.stop - 1}"
                raise StudyError(f"eval: {what} {getattr(spec, what)} overlap shard set {name}'s pretraining images "
                                 f"({read} of {options.input}); take queries from rows it does not read")


def check_fit_queries(spec: EvalSpec, shard_sets: dict[str, SynthOptions | MergeSet]) -> None:
    """The fit split's bank must not hold the pretraining images themselves (each would find itself)."""
    name = spec.fit_queries
    if name is None:
        return
    options = shard_sets.get(name)
    if not isinstance(options, SynthOptions):
        raise StudyError(f"eval: fit_queries {name!r} must name a synthesized shard set of this study "
                         f"({', '.join(n for n, o in shard_sets.items() if isinstance(o, SynthOptions))})")
    rows = pretraining_rows(options)
    if rows is None or overlap(rows, _spec(spec.val_bank) or _spec(spec.bank)):
        raise StudyError(f"eval: val_bank {spec.val_bank or spec.bank} holds shard set {name}'s pretraining images; "
                         "take the bank from rows it does not read")


def _check_sets(sets: dict[str, SynthOptions | MergeSet]) -> None:
    plain = [n for n, o in sets.items() if isinstance(o, SynthOptions)]
    for name, options in sets.items():
        if isinstance(options, MergeSet) and (len(options.merge) < 2 or len(set(options.merge)) != len(options.merge)
                                              or not all(s in plain for s in options.merge)):
            raise StudyError(f"shard_sets:{name}: merge must list two or more distinct synthesized shard sets of this "
                             f"study ({', '.join(plain)}), got {options.merge!r}")


def _check_arms(parsed) -> dict[str, Arm]:
    arms = {}
    for name, a in parsed.arms.items():
        if a.shards not in parsed.shard_sets:
            raise StudyError(f"arms:{name} needs 'shards: SET' naming one of the shard_sets "
                             f"({', '.join(parsed.shard_sets)}), got {a.shards!r}")
        if a.series is not None and a.x is None:
            raise StudyError(f"arms:{name}: series {a.series!r} needs the arm's x (its value on that axis)")
        arms[name] = Arm(name, a.shards, a.x, a.recipe, dict(a.model_extra or {}), a.series, a.control)
    if parsed.control not in arms:
        raise StudyError(f"control {parsed.control!r} is not an arm; arms: {', '.join(arms)}")
    for arm in arms.values():
        if arm.control is not None and (arm.control not in arms or arm.control == arm.name):
            raise StudyError(f"arms:{arm.name}: control {arm.control!r} must name another arm; arms: {', '.join(arms)}")
    return arms


def _check_decision(d: Decision, spec: EvalSpec) -> None:
    if d.split == "val" and not spec.val_queries:
        raise StudyError("decision: split val needs eval: val_queries")
    if d.split == "test" and not spec.test:
        raise StudyError("decision: split test needs eval: test")
    if d.metric in ("mean", "linear") and not spec.linear:
        raise StudyError(f"decision: metric {d.metric} needs the linear probe (eval: linear: true), or metric knn")
    if d.select_min_delta is not None and d.split != "val":  # choosing on test would spend the split the claim needs
        raise StudyError("decision: select_min_delta is a screen's rule and needs split: val")


def load_study(path: str | Path) -> Study:
    """Parse and check a study file; every arm's recipe is merged here (base + train + arm)."""
    path = Path(path)
    data = read_yaml(path, "study file")
    parsed = parse_study_file(data, path)
    try:
        study = _checked_study(parsed, data, path)
        for arm in study.arms.values():
            base = read_yaml(recipe_file(arm.recipe or study.recipe), "recipe")
            study.merged[arm.name] = deep_merge(deep_merge(base, study.train), arm.overrides)
    except StudyError as exc:  # the rules across sections and the recipes it names: the line names the file too
        raise StudyError(f"{path}: {exc}") from None
    return study


def _checked_study(parsed, data: dict, path: Path) -> Study:
    _check_sets(parsed.shard_sets)
    arms = _check_arms(parsed)
    _check_decision(parsed.decision, parsed.eval)
    check_data_identity(parsed.eval, parsed.shard_sets)
    check_fit_queries(parsed.eval, parsed.shard_sets)
    # the options as written (what the arm digests hash); every key and value was checked above
    raw_sets = {name: dict(data["shard_sets"][name] or {}) for name in parsed.shard_sets}
    study = Study(name=parsed.name, folder=Path(parsed.results or path.parent), seeds=list(parsed.seeds),
                  control=parsed.control, eval=parsed.eval, shard_sets=raw_sets,
                  train=dict(parsed.train.model_extra or {}), recipe=parsed.train.recipe, arms=arms,
                  output=Path(parsed.output or f"out/studies/{parsed.name}"), plot_x=parsed.plot.x,
                  plot_label=parsed.plot.label, decision=parsed.decision, note=parsed.note,
                  synth=dict(parsed.shard_sets))
    if parsed.decision.select_min_delta is not None and not study.screened_arms():
        raise StudyError("decision: select_min_delta needs an arm to choose: one paired against a control that is "
                         "no arm's control itself")
    return study
