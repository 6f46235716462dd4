"""The study file's schema: every key it may hold, with its type and range, in one place.

Parsed strictly (pydantic, strict mode: no "3" for 3, no 1.5 for an integer, no true for a
number, no NaN or infinity) into typed sections; an unknown key, a key the runner sets itself, a
wrong type or a value out of range is one StudyError line naming the file, the key and what is
allowed. Cross-section rules (an arm's shard set exists, the validation split is held out) are
checked by config.load_study on the parsed objects.

A shard set's options are gcl-synth `run` options and nothing else, typed by the core's
gcl.synthconfig schema: the runner writes them to a file that gcl-synth parses with the same
schema (`gcl-synth run --config`), so no key or value of the study file becomes a flag.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from gcl.errors import UserError
from gcl.eval.study.datafiles import DataSpec, DataSpecError
from gcl.synthconfig import COMMAND_LINE_KEYS, Count, Device, PathText, SynthConfig

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # becomes a file name
MERGE_KEY = "merge"
# Set by the runner for every run (one output folder and one seed per run): never in a recipe.
# shards_base too: where shards are read from (a pipe: command included) is the runner's choice.
RUNNER_TRAIN_KEYS = frozenset({"output", "seed", "shards", "input", "shards_base"})


class StudyError(UserError):
    """A study file that cannot be run as written (one line)."""


def _name(value):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError("must be letters, digits, '_', '-' or '.' (it becomes a file name), at most 100")
    return value


def _data_spec(value: str) -> str:
    try:
        DataSpec.parse(value)
    except DataSpecError as exc:
        raise ValueError(str(exc)) from None
    return value


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty text")
    return value


Name = Annotated[str, BeforeValidator(_name)]
DataPath = Annotated[PathText, AfterValidator(_data_spec)]


class Section(BaseModel):
    """A mapping with known keys only, each strictly typed; a key written but left empty (`eval:`)
    is the section's defaults."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, validate_default=False)
    RUNNER_KEYS: ClassVar[frozenset] = frozenset()
    RUNNER_HINT: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise PydanticCustomError("mapping", "must be a mapping (key: value lines)")
        owned = sorted(str(k) for k in data if k in cls.RUNNER_KEYS)
        if owned:
            raise PydanticCustomError("runner_keys", "sets {keys}", {"keys": ", ".join(owned), "hint": cls.RUNNER_HINT})
        if cls.model_config.get("extra") == "forbid":
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise PydanticCustomError("unknown_keys", "unknown key(s) {keys}",
                                          {"keys": ", ".join(unknown), "allowed": ", ".join(sorted(cls.model_fields))})
        return data


class EvalSpec(Section):
    bank: DataPath = "../shared/data/cifar10_train.npz"  # kNN bank and linear-probe train set (20k CIFAR-10)
    test: DataPath | None = "../shared/data/cifar10_test.npz"  # queries: the full 10k test split
    k: int = Field(20, ge=1, le=100_000)  # neighbours, as solo-learn / lightly report kNN
    temperature: float = Field(0.07, gt=0, le=1e6)  # vote weight exp(cos / T), as solo-learn / lightly
    linear: bool = True  # also fit the linear probe (eval/linear.py defaults) on cached features
    limit_bank: Count | None = None  # first N bank images only (tests); None: all
    limit_test: Count | None = None  # first N test images only (tests); None: all
    device: Device = "auto"  # feature extraction: cuda when present, else cpu
    batch_size: int = Field(256, ge=1, le=65536)  # images per feature-extraction forward pass
    # validation split: labelled queries held out of pretraining and of the test split (FILE[A:B]
    # takes images A..B-1 of a file), scored against val_bank (default: bank); None: no val split
    val_queries: DataPath | None = None
    val_bank: DataPath | None = None
    checkpoints: list[Literal["last", "avg"]] = Field(default_factory=lambda: ["last"])  # last decides; avg reported
    # a shard set of the study whose original images (the pretraining images) are also scored as
    # queries against val_bank: the 'fit' split. Fit far above val says the regime is data-limited
    # (the encoder separates the images it trained on better than unseen ones). None: not scored
    fit_queries: Name | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if not self.checkpoints or self.checkpoints[0] != "last" or len(set(self.checkpoints)) != len(self.checkpoints):
            raise ValueError(f"checkpoints must be a list starting with last, from last, avg; got {self.checkpoints!r}")
        if not self.test and not self.val_queries:
            raise ValueError("eval needs test or val_queries: something to score")
        if self.fit_queries is not None and not self.val_queries:
            raise ValueError("fit_queries is scored against val_bank and needs val_queries beside it")
        return self


class Decision(Section):
    """The rule a study's verdict follows, fixed in the study file before its runs."""

    metric: Literal["mean", "knn", "linear"] = "mean"  # mean of kNN and linear top-1 | knn | linear
    split: Literal["test", "val"] = "test"  # test (confirmatory) | val (screening)
    alpha: float = Field(0.05, gt=0, lt=0.5)  # one-sided paired t-test: "helps" only if the (1 - alpha) lower bound > 0
    effect: float = Field(1.0, gt=0, le=100)  # points: the effect the seed count is powered for
    power: float = Field(0.8, gt=0, lt=1)
    # a screen's selection: the screened arm with the largest mean paired Δ (points) goes on to a
    # confirmatory study if that Δ is at least this; None: no selection (a confirmatory study)
    select_min_delta: float | None = Field(None, ge=-100, le=100)
    # points: the equivalence test (TOST) calls the arms equivalent when the mean paired Δ lies
    # within ±margin; fixed before the runs like the rest of the rule; None: no equivalence test
    equivalence_margin: float | None = Field(None, gt=0, le=100)


class SynthOptions(Section, SynthConfig):
    """A shard set's gcl-synth run options (gcl.synthconfig's schema; gcl-synth's defaults apply to
    those left out). The runner hands them to gcl-synth as a --config file, never as flags."""

    RUNNER_KEYS: ClassVar[frozenset] = COMMAND_LINE_KEYS
    RUNNER_HINT: ClassVar[str] = " (give a dask scheduler with gcl-eval study --scheduler)"


class MergeSet(Section):
    """`{merge: [A, B]}`: gcl-synth merge joins sets A and B (same images, same order)."""

    merge: list[Name] = Field(max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        others = sorted(str(k) for k in data if k != MERGE_KEY) if isinstance(data, dict) else []
        if others:
            raise PydanticCustomError("merge_only", "a merged set takes only 'merge: [SET, SET, ...]', not {keys}",
                                      {"keys": ", ".join(others)})
        return data


def _set_kind(value) -> str:
    return "merge" if isinstance(value, dict) and MERGE_KEY in value else "synth"


ShardSetSpec = Annotated[Union[Annotated[SynthOptions, Tag("synth")], Annotated[MergeSet, Tag("merge")]],
                         Discriminator(_set_kind)]


class ArmSpec(Section):
    """The keys the study reads; every other key of an arm is a gcl-train recipe key (gcl-train
    checks those on the merged recipe before any work)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    RUNNER_KEYS: ClassVar[frozenset] = RUNNER_TRAIN_KEYS - {"shards"}
    RUNNER_HINT: ClassVar[str] = " for every run"
    shards: Name  # a shard_sets name
    x: float | None = None  # value on the plot's x axis (else read from plot.x in the merged recipe)
    series: Annotated[str, BeforeValidator(_text)] | None = None  # the plot panel (and x-axis title) of a sweep
    recipe: PathText | None = None  # this arm's base recipe instead of train.recipe
    control: Name | None = None  # this arm's own compute-matched control; None: the study's


class TrainDefaults(Section):
    """Recipe keys shared by every arm, and the base recipe (a bundled name or a YAML path)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)
    RUNNER_KEYS: ClassVar[frozenset] = RUNNER_TRAIN_KEYS
    RUNNER_HINT: ClassVar[str] = " for every run"
    recipe: PathText = "cifar10/simclr"


class PlotSpec(Section):
    x: Annotated[str, Field(min_length=1, max_length=200)] | None = None  # dotted recipe key for the x axis
    label: Annotated[str, Field(min_length=1, max_length=200)] | None = None


def _seeds(value):
    if (not isinstance(value, list) or not value
            or not all(type(s) is int and 0 <= s < 2**32 for s in value)):
        raise ValueError("must be a non-empty list of integers from 0 to 2^32-1, e.g. [0, 1, 2]")
    if len(set(value)) != len(value):
        raise ValueError("lists a seed twice")
    return value


class StudyFile(Section):
    name: Name
    seeds: Annotated[list[int], BeforeValidator(_seeds)]
    control: Name
    eval: EvalSpec = Field(default_factory=EvalSpec)
    shard_sets: dict[Name, ShardSetSpec] = Field(min_length=1)
    train: TrainDefaults = Field(default_factory=TrainDefaults)
    arms: dict[Name, ArmSpec] = Field(min_length=1)
    plot: PlotSpec = Field(default_factory=PlotSpec)
    output: PathText | None = None  # run folders and shard sets (default out/studies/NAME)
    decision: Decision = Field(default_factory=Decision)
    results: PathText | None = None  # results JSONs and the report (default: the study file's folder)
    note: Annotated[str, Field(max_length=10_000)] | None = None  # said atop results.md and after every sitting


_RULES = {
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}", "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}", "finite_number": "must be a finite number (not .nan or .inf)",
    "int_type": "must be an integer", "int_from_float": "must be an integer", "float_type": "must be a number",
    "bool_type": "must be true or false", "string_type": "must be a text", "literal_error": "must be one of {expected}",
    "dict_type": "must be a mapping", "list_type": "must be a list", "missing": "is required",
    "too_short": "must hold at least {min_length} item(s)", "too_long": "must hold at most {max_length} item(s)",
    "string_too_short": "must not be empty", "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must be one line of printable text matching {pattern}",
}


def _location(loc: tuple) -> list[str]:
    """('shard_sets', 's', 'synth', 'views') -> ['shard_sets', 's', 'views'] (the union's tag left out);
    a list index joins its key: ('seeds', 2) -> ['seeds[2]']."""
    parts: list[str] = []
    for i, p in enumerate(loc):
        if (i == 2 and loc[0] == "shard_sets" and p in ("synth", "merge")) or p == "[key]":
            continue
        if isinstance(p, int) and parts:
            parts[-1] += f"[{p}]"
        else:
            parts.append(str(p))
    return parts


def _got(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def error_line(exc: ValidationError) -> str:
    """One line for the first schema error: where, which key, what is allowed, what was given."""
    err = exc.errors(include_url=False)[0]
    parts, ctx, kind = _location(tuple(err["loc"])), err.get("ctx") or {}, err["type"]
    here = ":".join(parts) or "the study file"
    if kind == "unknown_keys":
        return f"unknown key(s) {ctx['keys']} in {here}; allowed: {ctx['allowed']}"
    if kind == "runner_keys":
        return f"{here} sets {ctx['keys']}; the study runner chooses those itself{ctx['hint']}"
    if kind in ("mapping", "merge_only"):
        return f"'{here}' {err['msg']}" if kind == "mapping" else f"{here}: {err['msg']}"
    rule = _RULES[kind].format(**ctx) if kind in _RULES else err["msg"].removeprefix("Value error, ")
    given = "" if kind == "missing" else f", got {_got(err.get('input'))}"
    if (kind == "value_error" and not isinstance(err.get("input"), (int, float, str, list))) or not parts:
        return f"{here}: {rule}"  # a rule over a whole section
    section, key = ":".join(parts[:-1]), parts[-1]
    return f"{section}: {key} {rule}{given}" if section else f"'{key}' {rule}{given}"


def parse_study_file(data, path) -> StudyFile:
    """The study file's value as a StudyFile, or one StudyError line naming the file."""
    if not isinstance(data, dict):
        raise StudyError(f"study file {path} must be a YAML mapping")
    try:
        return StudyFile.model_validate(data)
    except ValidationError as exc:
        raise StudyError(f"{path}: {error_line(exc)}") from None
    except RecursionError:
        raise StudyError(f"{path}: nests too deeply") from None
