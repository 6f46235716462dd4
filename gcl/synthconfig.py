"""A gcl-synth run's options as a file (`gcl-synth run --config FILE`): what to make, as typed data.

The file says what a shard set is made of (generator, model, input, views, recipe, seed...); the
command line says where it goes and where it runs (--output, --name, --overwrite, --manifest,
--scheduler, --node-rank, --num-nodes), so those keys are refused here. A study hands gcl-synth
each shard set this way: the study file's options are parsed by this schema, written as a file and
parsed again by gcl-synth, never turned into command-line flags.

Keys are the run options' names with '_' (`shard_size: 500`; `workers` is --processes). Paths are
read as on the command line: from the current folder. Ranges match the command line's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from gcl.errors import UserError
from gcl.schema import SharedModel, parse
from gcl.shards import IMAGE_FORMATS
from gcl.yamlsafe import read_shared_file

GENERATORS = ("taesd", "taef2", "vqgan", "esrgan", "diffusion", "maskgit", "mae")  # taef2: taesd's other name
MAX_COUNT = 10**9  # images, shards, limits: far above any data set gcl reads
# Keys that say where the set goes and where the work runs: the command line's, never a shared file's
# (dask speaks pickle, so a scheduler address in a shared file would hand code execution to it).
COMMAND_LINE_KEYS = frozenset({"output", "name", "manifest", "overwrite", "no_progress", "scheduler",
                               "node_rank", "num_nodes"})

# a path or a model id on one line: no control characters (a value is never more than a value)
PathText = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$")]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:[0-9]{1,2})?)$")]


class SynthConfigError(UserError):
    """A --config file that cannot be used as written (one line)."""


class SynthConfig(SharedModel):
    """gcl-synth run options a file may set; those it leaves out keep the command line's value."""

    generator: Literal[GENERATORS] = "taesd"
    model: PathText | None = None  # hub id or local folder; None: the family's default model
    pixel_range: Literal["auto", "0-1", "-1-1"] = "auto"
    input: PathText | None = None  # None: CIFAR-10 train
    limit: Count | None = None  # the first N inputs (sorted)
    per_class: Count | None = None  # the first N images of each class
    label_key: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None  # WebDataset json field
    views: int = Field(2, ge=0, le=64)
    resolution: int = Field(64, ge=8, le=4096)
    recipe: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = None
    residual: bool = False
    seed: int = Field(0, ge=0, le=2**63 - 1)
    shard_size: Count = 1000
    batch_size: int = Field(32, ge=1, le=65536)
    workers: int = Field(1, ge=1, le=1024)  # --processes
    image_format: Literal[IMAGE_FORMATS] = "jpg"
    quality: int = Field(95, ge=1, le=100)
    device: Device = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    retries: int = Field(2, ge=0, le=100)
    max_error_rate: float = Field(0.1, ge=0, le=1)
    reference: PathText | None = None  # a published manifest to compare the finished set with

    def given(self) -> dict:
        """The options the file (or mapping) set, by key: what it passes on; the rest keep their defaults."""
        return self.model_dump(exclude_unset=True)


def parse_synth_config(data, where: str) -> SynthConfig:
    """A mapping checked against SynthConfig, or one SynthConfigError line naming `where` and the key."""
    if not isinstance(data, dict):
        raise SynthConfigError(f"{where} must be a mapping of gcl-synth run options (key: value lines)")
    owned = sorted(str(k) for k in data if k in COMMAND_LINE_KEYS)
    if owned:
        raise SynthConfigError(f"{where}: {', '.join(owned)} is the command line's to set (where the set goes and "
                               "where it runs), not a file's")
    return parse(SynthConfig, data, where, SynthConfigError)


def read_synth_config(path: str | Path) -> SynthConfig:
    """A --config file (YAML or JSON, read by the shared-file loader), or one SynthConfigError line."""
    data = read_shared_file(path, "config file", SynthConfigError, kind="YAML or JSON")
    return parse_synth_config({} if data is None else data, f"config file {path}")
