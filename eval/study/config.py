"""A study file (YAML): arms x seeds, the shard sets they train on, and how runs are evaluated.

Parsed once into a `Study`; unknown keys are errors (a typo must not silently change a study).
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
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gcl.errors import UserError
from gcl.yamlsafe import safe_load
from gcl.shardset import OutputLayout

STUDY_KEYS = {"name", "seeds", "control", "eval", "shard_sets", "train", "arms", "plot", "output", "decision", "results",
              "note"}
EVAL_KEYS = {"bank", "test", "k", "temperature", "linear", "limit_bank", "limit_test", "device", "batch_size",
             "val_queries", "val_bank", "checkpoints"}
DECISION_KEYS = {"metric", "split", "alpha", "effect", "power", "select_min_delta"}
METRICS = ("mean", "knn", "linear")  # mean: the mean of kNN and linear top-1
CHECKPOINTS = ("last", "avg")
PLOT_KEYS = {"x", "label"}
# Arm keys the study itself reads; every other arm key is a gcl-train recipe key.
ARM_STUDY_KEYS = {"shards", "x", "series", "recipe", "control"}
# Set by the runner for every run (one output folder and one seed per run): never in a recipe.
# shards_base too: where shards are read from (a pipe: command included) is the runner's choice.
RUNNER_TRAIN_KEYS = {"output", "seed", "shards", "input", "shards_base"}
# Set by the runner for every shard set (it owns the folder and the name). `scheduler` picks the
# dask scheduler gcl-synth connects to (and dask speaks pickle): where work runs is the command
# line's choice (gcl-eval study --scheduler), never a shared study file's.
RUNNER_SYNTH_KEYS = {"output", "name", "manifest", "overwrite", "no_progress", "scheduler"}
# A shard set `{merge: [A, B]}` is not synthesized: gcl-synth merge joins sets A and B (same images,
# same order) into families with both sets' generated views.
MERGE_KEY = "merge"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # becomes a file name


class StudyError(UserError):
    """A study file that cannot be run as written (one line)."""


@dataclass
class EvalSpec:
    bank: str = "../shared/data/cifar10_train.npz"  # kNN bank and linear-probe train set (20k CIFAR-10)
    test: str = "../shared/data/cifar10_test.npz"  # queries: the full 10k test split
    k: int = 20  # neighbours, as solo-learn / lightly report kNN
    temperature: float = 0.07  # vote weight exp(cos / T), as solo-learn / lightly
    linear: bool = True  # also fit the linear probe (eval/linear.py defaults) on cached features
    limit_bank: int | None = None  # first N bank images only (tests); None: all
    limit_test: int | None = None  # first N test images only (tests); None: all
    device: str = "auto"  # feature extraction: cuda when present, else cpu
    batch_size: int = 256  # images per feature-extraction forward pass
    # validation split: labelled queries held out of pretraining and of the test split (FILE[A:B]
    # takes images A..B-1 of a file), scored against val_bank (default: bank); None: no val split
    val_queries: str | None = None
    val_bank: str | None = None
    checkpoints: list = field(default_factory=lambda: ["last"])  # last (decides) and/or avg (reported)


@dataclass
class Decision:
    """The rule a study's verdict follows, fixed in the study file before its runs."""

    metric: str = "mean"  # mean of kNN and linear top-1 | knn | linear
    split: str = "test"  # test (confirmatory) | val (screening)
    alpha: float = 0.05  # one-sided paired t-test: "helps" only if the (1 - alpha) lower bound is > 0
    effect: float = 1.0  # points: the effect the seed count is powered for
    power: float = 0.8
    # a screen's selection: the screened arm with the largest mean paired Δ (points) goes on to a
    # confirmatory study if that Δ is at least this; None: no selection (a confirmatory study)
    select_min_delta: float | None = None


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
    shard_sets: dict[str, dict]  # name -> gcl-synth run options
    train: dict  # recipe keys shared by every arm (minus 'recipe')
    recipe: str  # base recipe: bundled name (cifar10/simclr) or YAML path
    arms: dict[str, Arm]
    output: Path  # run folders and shard sets
    plot_x: str | None = None
    plot_label: str | None = None
    decision: Decision = field(default_factory=Decision)
    note: str | None = None  # said at the top of results.md and at the end of every sitting
    merged: dict = field(default_factory=dict)  # arm -> merged recipe, filled by load_study

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


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"'{where}' must be a mapping")
    return value


def _no_unknown(data: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise StudyError(f"unknown key(s) {', '.join(map(str, unknown))} in {where}; allowed: {', '.join(sorted(allowed))}")


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise StudyError(f"{what} {value!r} must be letters, digits, '_', '-' or '.' (it becomes a file name)")
    return value


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
    try:
        data = safe_load(path.read_text())  # gcl.yamlsafe: no anchors/aliases, no duplicate keys
    except FileNotFoundError:
        raise StudyError(f"{what} not found: {path}") from None
    except yaml.YAMLError as exc:
        raise StudyError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise StudyError(f"{what} {path} must be a YAML mapping")
    return data


def _eval_spec(data) -> EvalSpec:
    data = _mapping(data, "eval")
    _no_unknown(data, EVAL_KEYS, "eval")
    spec = EvalSpec(**data)
    numbers = (spec.k, spec.temperature, spec.batch_size, spec.limit_bank or 1, spec.limit_test or 1)
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        raise StudyError("eval: k, temperature, batch_size, limit_bank and limit_test must be numbers")
    if spec.k < 1 or spec.temperature <= 0 or spec.batch_size < 1:
        raise StudyError("eval needs k >= 1, temperature > 0 and batch_size >= 1")
    for key in ("bank", "test", "val_queries", "val_bank"):
        if getattr(spec, key) is not None and not isinstance(getattr(spec, key), str):
            raise StudyError(f"eval: {key} must be a file path (FILE or FILE[A:B]), got {getattr(spec, key)!r}")
    if not spec.test and not spec.val_queries:
        raise StudyError("eval needs test or val_queries: something to score")
    if (not isinstance(spec.checkpoints, list) or not spec.checkpoints
            or not set(spec.checkpoints) <= set(CHECKPOINTS) or spec.checkpoints[0] != "last"):
        raise StudyError(f"eval: checkpoints must be a list starting with last, from {', '.join(CHECKPOINTS)}; "
                         f"got {spec.checkpoints!r}")
    return spec


def _decision(data) -> Decision:
    data = _mapping(data, "decision")
    _no_unknown(data, DECISION_KEYS, "decision")
    d = Decision(**data)
    if d.metric not in METRICS or d.split not in ("test", "val"):
        raise StudyError(f"decision: metric must be one of {', '.join(METRICS)} and split test or val")
    numbers = (d.alpha, d.effect, d.power)
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers) or not (
            0 < d.alpha < 0.5 and d.effect > 0 and 0 < d.power < 1):
        raise StudyError("decision: needs 0 < alpha < 0.5, effect > 0 and 0 < power < 1")
    if d.select_min_delta is not None:
        if not isinstance(d.select_min_delta, (int, float)) or isinstance(d.select_min_delta, bool):
            raise StudyError(f"decision: select_min_delta must be a number of points; got {d.select_min_delta!r}")
        if d.split != "val":  # choosing on test would spend the split the chosen arm's claim needs
            raise StudyError("decision: select_min_delta is a screen's rule and needs split: val")
    return d


_SLICE = re.compile(r"^(?P<path>.+)\[(?P<start>\d*):(?P<stop>\d*)\]$")


@dataclass(frozen=True)
class DataSpec:
    """A labelled file, or a slice of it: FILE[A:B] is images A..B-1 in file order."""

    path: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "DataSpec":
        m = _SLICE.match(spec)
        if not m:
            return cls(spec)
        return cls(m["path"], int(m["start"]) if m["start"] else None, int(m["stop"]) if m["stop"] else None)

    def indices(self, n: int) -> range:
        return range(n)[self.start:self.stop]


def _rows(spec: str | None) -> tuple[str, int, float] | None:
    """FILE[A:B] -> (FILE, A, B); a whole file -> (FILE, 0, inf)."""
    if not spec:
        return None
    d = DataSpec.parse(spec)
    return d.path, d.start or 0, float(d.stop) if d.stop is not None else float("inf")


def data_file(spec: str | None) -> str | None:
    """The file of a data spec (FILE or FILE[A:B])."""
    rows = _rows(spec)
    return rows[0] if rows else None


def check_validation_split(spec: EvalSpec, shard_sets: dict[str, dict]) -> None:
    """Validation queries must be images that pretraining never saw and that are not bank images."""
    queries = _rows(spec.val_queries)
    if queries is None:
        return
    path, start, stop = queries
    if spec.test and Path(spec.test) == Path(path):
        raise StudyError("eval: val_queries come from the test file; validation must be held out of the test split")
    bank = _rows(spec.val_bank or spec.bank)
    if bank and Path(bank[0]) == Path(path) and bank[1] < stop and start < bank[2]:
        raise StudyError(f"eval: val_bank {spec.val_bank or spec.bank} overlaps val_queries {spec.val_queries}; "
                         "every query would find itself")
    for name, options in shard_sets.items():
        if options.get("input") and Path(str(options["input"])) == Path(path):
            used = options.get("limit")
            if not isinstance(used, int) or used > start:
                raise StudyError(f"eval: val_queries {spec.val_queries} overlap shard set {name}'s pretraining images "
                                 f"(limit {used}); take queries after the first {used or 'N'} images")


def _shard_sets(data) -> dict[str, dict]:
    sets = {}
    for name, options in _mapping(data, "shard_sets").items():
        options = _mapping(options, f"shard_sets:{name}")
        owned = sorted(set(options) & RUNNER_SYNTH_KEYS)
        if owned:
            hint = " (give a dask scheduler with gcl-eval study --scheduler)" if "scheduler" in owned else ""
            raise StudyError(f"shard_sets:{name} sets {', '.join(owned)}; the study runner chooses those itself{hint}")
        sets[_name(name, "shard set name")] = options
    if not sets:
        raise StudyError("the study lists no shard_sets")
    for name, options in sets.items():
        if MERGE_KEY in options:
            _check_merge(name, options, sets)
    return sets


def _check_merge(name: str, options: dict, sets: dict[str, dict]) -> None:
    sources = options[MERGE_KEY]
    plain = [n for n, o in sets.items() if MERGE_KEY not in o]
    if set(options) != {MERGE_KEY}:
        raise StudyError(f"shard_sets:{name}: a merged set takes only 'merge: [SET, SET, ...]', not "
                         f"{', '.join(sorted(set(options) - {MERGE_KEY}))}")
    if (not isinstance(sources, list) or len(sources) < 2 or len(set(map(str, sources))) != len(sources)
            or not all(s in plain for s in sources)):
        raise StudyError(f"shard_sets:{name}: merge must list two or more distinct synthesized shard sets of this "
                         f"study ({', '.join(plain)}), got {sources!r}")


def _arm(name: str, data, shard_sets: dict) -> Arm:
    data = dict(_mapping(data, f"arms:{name}"))
    owned = sorted(set(data) & RUNNER_TRAIN_KEYS - {"shards"})
    if owned:
        raise StudyError(f"arms:{name} sets {', '.join(owned)}; the study runner chooses those for every run")
    shards = data.pop("shards", None)
    if shards not in shard_sets:
        raise StudyError(f"arms:{name} needs 'shards: SET' naming one of the shard_sets ({', '.join(shard_sets)}), "
                         f"got {shards!r}")
    x = data.pop("x", None)
    if x is not None and not isinstance(x, (int, float)):
        raise StudyError(f"arms:{name}: x must be a number, got {x!r}")
    series = data.pop("series", None)
    if series is not None and (not isinstance(series, str) or not series.strip()):
        raise StudyError(f"arms:{name}: series must be a non-empty text (the sweep's axis title), got {series!r}")
    if series is not None and x is None:
        raise StudyError(f"arms:{name}: series {series!r} needs the arm's x (its value on that axis)")
    control = data.pop("control", None)
    recipe = data.pop("recipe", None)
    return Arm(_name(name, "arm name"), shards, x, recipe, data, series, control)


def _seeds(value) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and s >= 0 for s in value):
        raise StudyError("'seeds' must be a non-empty list of integers >= 0, e.g. [0, 1, 2]")
    if len(set(value)) != len(value):
        raise StudyError("'seeds' lists a seed twice")
    return value


def load_study(path: str | Path) -> Study:
    """Parse and check a study file; every arm's recipe is merged here (base + train + arm)."""
    path = Path(path)
    data = read_yaml(path, "study file")
    _no_unknown(data, STUDY_KEYS, "the study file")
    for key in ("name", "seeds", "control", "shard_sets", "arms"):
        if key not in data:
            raise StudyError(f"the study file needs '{key}'")
    name = _name(data["name"], "study name")
    shard_sets = _shard_sets(data["shard_sets"])
    train = dict(_mapping(data.get("train"), "train"))
    owned = sorted(set(train) & RUNNER_TRAIN_KEYS)
    if owned:
        raise StudyError(f"train sets {', '.join(owned)}; the study runner chooses those for every run")
    recipe = train.pop("recipe", "cifar10/simclr")
    arms = {str(n): _arm(str(n), a, shard_sets) for n, a in _mapping(data["arms"], "arms").items()}
    if not arms:
        raise StudyError("the study lists no arms")
    if data["control"] not in arms:
        raise StudyError(f"control {data['control']!r} is not an arm; arms: {', '.join(arms)}")
    for arm in arms.values():
        if arm.control is not None and (arm.control not in arms or arm.control == arm.name):
            raise StudyError(f"arms:{arm.name}: control {arm.control!r} must name another arm; arms: {', '.join(arms)}")
    plot = _mapping(data.get("plot"), "plot")
    _no_unknown(plot, PLOT_KEYS, "plot")
    decision = _decision(data.get("decision"))
    spec = _eval_spec(data.get("eval"))
    check_validation_split(spec, shard_sets)
    if decision.split == "val" and not spec.val_queries:
        raise StudyError("decision: split val needs eval: val_queries")
    if decision.split == "test" and not spec.test:
        raise StudyError("decision: split test needs eval: test")
    for key in ("results", "note"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise StudyError(f"'{key}' must be a text, got {data[key]!r}")
    study = Study(name=name, folder=Path(data.get("results") or path.parent), seeds=_seeds(data["seeds"]),
                  control=data["control"], eval=spec, shard_sets=shard_sets, train=train,
                  recipe=recipe, arms=arms, output=Path(data.get("output") or f"out/studies/{name}"), plot_x=plot.get("x"),
                  plot_label=plot.get("label"), decision=decision, note=data.get("note"))
    if decision.select_min_delta is not None and not study.screened_arms():
        raise StudyError("decision: select_min_delta needs an arm to choose: one paired against a control that is "
                         "no arm's control itself")
    for arm in arms.values():
        base = read_yaml(recipe_file(arm.recipe or recipe), "recipe")
        study.merged[arm.name] = deep_merge(deep_merge(base, train), arm.overrides)
    return study
