"""The schema of a study's result file (runs/ARM-sSEED.json), as the report reads it.

A result file is shared with the study (committed, edited by hand, copied between machines), so
the report parses it rather than trusting it: a file that is not JSON, or whose fields the report
reads have the wrong type (a text for seconds, a list for scores) is left out and counted; a
top-1 that is not a number from 0 to 100 (NaN, infinity, 1e308) is a missing score, said as
such, so one bad number can neither crash the report nor move a mean, a verdict or a selection.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BYTES = 10 << 20  # a result file is a few KB
TOP_K = ("knn_top1", "knn_top5", "linear_top1", "linear_top5")


class _Open(BaseModel):
    """Typed where the report reads; other keys are kept as written."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class SplitScores(_Open):
    knn_top1: float | None = Field(None, ge=0, le=100)  # None: missing (the split then has no score)
    knn_top5: float | None = Field(None, ge=0, le=100)
    linear_top1: float | None = Field(None, ge=0, le=100)
    linear_top5: float | None = Field(None, ge=0, le=100)
    n_bank: int | None = Field(None, ge=0)
    n_queries: int | None = Field(None, ge=0)


class CheckpointScores(_Open):
    test: SplitScores | None = None
    val: SplitScores | None = None
    fit: SplitScores | None = None  # the pretraining images as queries (eval: fit_queries)


class CodeSitting(_Open):
    commit: str | None = None
    dirty: bool | None = None
    num_workers: int | None = Field(None, ge=0, le=10_000)


class TrainRecord(_Open):
    seconds: float = Field(ge=0, le=1e9)
    sittings: int | None = Field(None, ge=0, le=10**6)
    code: list[CodeSitting] = Field(default_factory=list)


class SynthRecord(_Open):
    seconds: float | None = Field(None, ge=0, le=1e10)
    flops_per_image: float | None = Field(None, ge=0, le=1e18)
    images: int | None = Field(None, ge=0)
    source: str | None = None


class ResultRecord(_Open):
    study: str | None = None
    arm: str
    seed: int = Field(ge=0)
    digest: str
    knn_top1: float | None = Field(None, ge=0, le=100)  # results before splits were recorded: last.ckpt on test
    knn_top5: float | None = Field(None, ge=0, le=100)
    linear_top1: float | None = Field(None, ge=0, le=100)
    linear_top5: float | None = Field(None, ge=0, le=100)
    scores: dict[str, CheckpointScores] | None = None
    train: TrainRecord
    synth: SynthRecord | None = None


def _drop_bad_scores(block: dict, where: str, notes: list[str]) -> None:
    """Top-k values that are not a number from 0 to 100 become missing (and are said)."""
    for key in TOP_K:
        value = block.get(key)
        out_of_range = ((type(value) is int and not 0 <= value <= 100)  # ints compared exactly: 10**400 has no float
                        or (type(value) is float and not (math.isfinite(value) and 0 <= value <= 100)))
        if out_of_range:
            del block[key]
            shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:21] + "..."
            notes.append(f"{where}{key} = {shown} is not a top-1/top-5 in 0-100: left out as missing")


def _score_blocks(record: dict):
    yield "", record
    scores = record.get("scores")
    if isinstance(scores, dict):
        for checkpoint, splits in scores.items():
            if isinstance(splits, dict):
                for split, block in splits.items():
                    if isinstance(block, dict):
                        yield f"scores.{checkpoint}.{split}.", block


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "the file"
    return f"{where}: {err['msg']}"


def read_result(path: Path, arm: str, seed: int) -> tuple[dict | None, list[str]]:
    """(the result as the report may read it, or None when it must be left out; notes saying what
    was left out and why, one line each, naming the file)."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None, [f"{path.name}: larger than {MAX_BYTES} bytes: left out"]
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, [f"{path.name}: not a readable JSON result ({type(exc).__name__}): left out"]
    if not isinstance(record, dict):
        return None, [f"{path.name}: not a JSON object: left out"]
    notes: list[str] = []
    for where, block in _score_blocks(record):
        _drop_bad_scores(block, f"{path.name}: {where}", notes)
    try:
        parsed = ResultRecord.model_validate(record)
    except ValidationError as exc:
        return None, [f"{path.name}: {_first_error(exc)}: left out"]
    except RecursionError:
        return None, [f"{path.name}: nests too deeply: left out"]
    if (parsed.arm, parsed.seed) != (arm, seed):
        return None, [f"{path.name}: holds arm {parsed.arm!r} seed {parsed.seed}, not {arm} seed {seed}: left out"]
    return record, notes
