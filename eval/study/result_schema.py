"""The schema of a study's result file (STUDY_FOLDER/runs/ARM-sSEED.json, runner.result_record):
what `gcl-eval study --report-only` may read from a results folder someone shared.

Scores are percentages in [0, 100] and finite (one NaN would hide the leader of a table); counts,
seeds and times have bounds; every key is known. read_result(path) returns the record as the dict
it was read as, or one StudyResultError line naming the file, the key and what it allows.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field

from gcl.errors import UserError
from gcl.manifest import Count, Text, read_json_file
from gcl.schema import OpenModel, SharedModel, parse

Percent = Annotated[float, Field(ge=0.0, le=100.0)]
Seconds = Annotated[float, Field(ge=0.0, le=1e9)]  # 30 years
# Lightning seeds are [0, 2^32); a study's seeds are gcl-train's
Seed = Annotated[int, Field(ge=0, lt=1 << 32)]


class StudyResultError(UserError):
    """A result file of a study that cannot be read or does not follow the schema."""


class SplitScores(SharedModel):
    """kNN and linear-probe top-1/top-5 of one checkpoint on one split, and the sizes behind them."""

    knn_top1: Percent
    knn_top5: Percent | None = None
    linear_top1: Percent | None = None
    linear_top5: Percent | None = None
    n_bank: Count | None = None
    n_queries: Count | None = None
    linear_epochs: Annotated[int, Field(ge=0, le=100_000)] | None = None


class CheckpointScores(SharedModel):
    test: SplitScores | None = None
    val: SplitScores | None = None
    feature_dim: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    ckpt_id: Text | None = None


class EvalRecord(SharedModel):
    bank: Text | None = None
    test: Text | None = None
    val_bank: Text | None = None
    val_queries: Text | None = None
    k: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    temperature: Annotated[float, Field(gt=0.0, le=1e3)] | None = None
    n_bank: Count | None = None
    n_test: Count | None = None
    feature_dim: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    ckpt_id: Text | None = None
    linear_epochs: Annotated[int, Field(ge=0, le=100_000)] | None = None


class CodeRecord(OpenModel):
    version: Text | None = None
    commit: Text | None = None
    dirty: bool | None = None
    num_workers: Annotated[int, Field(ge=0, le=256)] | None = None


class TrainRecord(SharedModel):
    seconds: Seconds
    sittings: Annotated[int, Field(ge=0, le=10**5)] | None = None
    epochs: Annotated[int, Field(ge=0, le=100_000)] | None = None
    steps: Count | None = None
    samples_per_s: Annotated[float, Field(ge=0.0, le=1e12)] | None = None
    method: Text | None = None
    backbone: Text | None = None
    batch_size: Annotated[int, Field(ge=1, le=65536)] | None = None
    gen_prob: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    code: Annotated[list[CodeRecord], Field(max_length=10**5)] = Field(default_factory=list)


class SynthCost(SharedModel):
    seconds: Seconds | None = None
    flops_per_image: Annotated[int, Field(ge=0, le=10**18)] | None = None
    images: Count | None = None
    source: Text | None = None


class StudyResult(SharedModel):
    """One run's result: which study, arm and seed, the digest of its configuration, and its scores."""

    study: Text | None = None
    arm: Text
    seed: Seed
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    shard_set: Text | None = None
    run_dir: Text | None = None
    checkpoint: Text | None = None
    # results written before splits and checkpoints were recorded: last.ckpt's test scores up here
    knn_top1: Percent | None = None
    knn_top5: Percent | None = None
    linear_top1: Percent | None = None
    linear_top5: Percent | None = None
    scores: dict[Annotated[str, Field(max_length=64)], CheckpointScores] = Field(default_factory=dict)
    eval: EvalRecord | None = None
    train: TrainRecord
    synth: SynthCost | None = None
    recipe: dict = Field(default_factory=dict)  # the merged gcl-train recipe the digest covers (shown, not run)
    gcl: CodeRecord | None = None
    created: Text | None = None


# A result is a few kilobytes; a megabyte is a thousand of them.
MAX_RESULT_BYTES = 1 << 20


def read_result(path: str | os.PathLike) -> dict:
    """A result file checked against StudyResult, or one StudyResultError line."""
    data = read_json_file(path, "study result", StudyResultError, max_bytes=MAX_RESULT_BYTES)
    parse(StudyResult, data, f"study result {path}", StudyResultError)
    return data
