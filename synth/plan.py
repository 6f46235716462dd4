"""The plan: a sorted, deterministic assignment of inputs to shards, and the fingerprint of
everything that changes output bytes. Re-running into an output with another fingerprint is
refused, so two different experiments can never be mixed in one shard set.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from gcl.errors import UserError
from gcl.inputs import InputItem, InputSet
from gcl.io import write_json_atomic
from gcl.manifest import Count, Text, read_json_file
from gcl.schema import SharedModel, parse
from gcl.shards import IMAGE_FORMATS
from gcl.shardset import OutputLayout


class SynthOptions(SharedModel):
    """Every option that changes output bytes (and nothing else: workers, retries do not); also the
    'options' of plan.json, so a plan read back has the same types and ranges as one made here."""

    model_config = ConfigDict(frozen=True)

    generator: Text  # family:arch (see Generator.id); the weights are named by their sha256, not their folder
    weights_sha256: Text
    recipe: Text  # the parsed recipe's spec string
    views: Annotated[int, Field(ge=0, le=64)]  # gcl-synth's --views range
    resolution: Annotated[int, Field(ge=8, le=4096)]  # gcl-synth's --resolution range
    image_format: Literal[IMAGE_FORMATS]
    quality: Annotated[int, Field(ge=1, le=100)]
    seed: Annotated[int, Field(ge=-(1 << 63), lt=1 << 63)]  # hashed with each key: any 64-bit integer
    # batch composition decides mix partners and float summation order; 65536 images per model call is past any GPU
    batch_size: Annotated[int, Field(ge=1, le=65536)]
    dtype: Literal["float32", "float16", "bfloat16"]
    device_type: Text  # "cpu" / "cuda": bytes are reproducible on the same kind of device
    residual: bool = False  # views are x + G(view) - G(reconstruction) (see worker.generate_views)


class PlanFile(SharedModel):
    """OUTPUT/plan.json: the plan a gcl-synth output folder was made with (Plan.to_json)."""

    name: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/\\]+$")]  # shard file prefix, no folder
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    options: SynthOptions
    input_fingerprint: Text
    num_inputs: Count
    num_shards: Annotated[int, Field(ge=0, le=10**7)]
    shard_sizes: Annotated[list[Count], Field(max_length=10**7)]


def read_plan(path: str | Path) -> PlanFile:
    """plan.json checked against PlanFile, or one PlanMismatch line naming the file."""
    data = read_json_file(path, "plan", PlanMismatch)
    return parse(PlanFile, data, f"plan {path}", PlanMismatch)


@dataclass
class ShardTask:
    """One unit of work, picklable for dask: which inputs go to which shard file."""

    index: int
    items: list[InputItem]
    out_dir: str
    name: str

    @property
    def tar_path(self) -> str:
        return OutputLayout(self.out_dir, self.name).tar(self.index)

    @property
    def stats_path(self) -> str:
        return OutputLayout(self.out_dir, self.name).stats(self.index)


@dataclass
class Plan:
    name: str
    out_dir: str
    options: SynthOptions
    input_fingerprint: str
    tasks: list[ShardTask]
    num_inputs: int

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"options": self.options.model_dump(), "inputs": self.input_fingerprint,
                           "shards": [len(t.items) for t in self.tasks], "name": self.name}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "options": self.options.model_dump(),
                "input_fingerprint": self.input_fingerprint, "num_inputs": self.num_inputs,
                "num_shards": len(self.tasks), "shard_sizes": [len(t.items) for t in self.tasks]}


OWNER = {"command": "gcl-synth run"}  # the set's owner marker (OutputLayout.owner): merge --overwrite leaves it alone


class PlanMismatch(UserError):
    """plan.json that does not match this run, or cannot be read."""


def make_plan(inputs: InputSet, out_dir: str, name: str, shard_size: int, options: SynthOptions,
              limit: int | None = None, per_class: int | None = None) -> Plan:
    items = sorted(inputs.items, key=lambda it: (it.source, it.index))
    if limit:
        items = items[:limit]
    if per_class:
        items = first_per_class(items, per_class)
    tasks = [ShardTask(i, items[start : start + shard_size], str(out_dir), name)
             for i, start in enumerate(range(0, len(items), shard_size))]
    fingerprint = inputs.fingerprint() + (f"/limit={limit}" if limit else "") + (f"/per_class={per_class}" if per_class
                                                                               else "")
    return Plan(name, str(out_dir), options, fingerprint, tasks, len(items))


def first_per_class(items: list, per_class: int) -> list:
    """The first `per_class` items of each label, in input order: a class-balanced subset (after
    --limit, so that the images it may take from are known, e.g. held out of a validation split)."""
    if any(it.label is None for it in items):
        raise UserError("--per-class needs labelled inputs (class folders, or an npz with 'labels')")
    taken: dict[int, int] = {}
    chosen = []
    for it in items:
        if taken.get(it.label, 0) < per_class:
            taken[it.label] = taken.get(it.label, 0) + 1
            chosen.append(it)
    short = sorted(label for label, n in taken.items() if n < per_class)
    if short:
        raise UserError(f"--per-class {per_class}: class(es) {', '.join(map(str, short))} have fewer images "
                        f"(raise --limit or lower --per-class)")
    return chosen


def check_or_write_plan(plan: Plan, overwrite: bool) -> None:
    """First run writes plan.json; a re-run must match it (resume) unless --overwrite."""
    out = Path(plan.out_dir)
    path = Path(OutputLayout(plan.out_dir, plan.name).plan)
    if path.exists():
        old = read_plan(path)
        if old.fingerprint != plan.fingerprint:
            if not overwrite:
                changed = [k for k, v in plan.to_json()["options"].items() if getattr(old.options, k) != v]
                if old.input_fingerprint != plan.input_fingerprint:
                    changed.append("inputs")
                raise PlanMismatch(
                    f"{out} holds shards of another plan (changed: {', '.join(changed) or 'shard layout'}); "
                    f"use another --output or pass --overwrite to replace them"
                )
            clear_output(OutputLayout(plan.out_dir, old.name))
    else:
        _refuse_foreign_set(OutputLayout(plan.out_dir, plan.name))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan.to_json())
    write_json_atomic(OutputLayout(plan.out_dir, plan.name).owner, OWNER)


def _refuse_foreign_set(layout: OutputLayout) -> None:
    """No plan.json, yet files of this set (plan.json comes before any shard): another command
    made them, e.g. a merge. gcl-synth run replaces only sets it planned, even with --overwrite."""
    if (layout.own_files() or os.path.lexists(layout.owner)) and layout.made_by() != OWNER:
        made_by = layout.made_by().get("command", "another command")
        raise PlanMismatch(f"{layout.folder} holds a set named {layout.name} made by {made_by}; gcl-synth run replaces "
                           "only sets it planned: move it away, or choose another --output or --name")


def clear_output(layout: OutputLayout) -> None:
    """--overwrite: every shard, stats file, temp file and the manifest of the old plan."""
    for p in Path(layout.folder).glob(f"{glob.escape(layout.name)}-*"):
        p.unlink()
    Path(layout.manifest).unlink(missing_ok=True)
    Path(layout.owner).unlink(missing_ok=True)
    Path(layout.plan).unlink(missing_ok=True)
