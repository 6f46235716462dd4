"""Shards -> view families -> chosen members, decoded to uint8 tensors -> batches.

The shard path is gcl.data.ViewFamilies (the public Dataset): its order, member choice and
decoding. The workers only decode; handcrafted augmentation runs on the whole batch in the
training process (train/augment.py, called by methods/base.py), where the model is.

Order of work per epoch: shard order shuffled by (seed, epoch), shards split by rank, a sample
shuffle buffer seeded by (seed, epoch, rank), and only then decoding - of the chosen members only,
at the shard resolution (`Source.size`; other sizes are resized and centre-cropped to it).

The order is a function of (seed, epoch, rank) only, never of the number of loader workers, so the
same seed is the same experiment on any machine, and each shard is read once per epoch: one reader
thread in the training process reads the rank's (cheap, undecoded) sample sequence and hands it
out in chunks; the workers decode them and PyTorch's DataLoader returns them in chunk order
(train/epochs.py). The main process cuts the chunks into exact batches and ends the epoch after
`steps_per_epoch` batches, so every rank takes the same number of steps (DDP needs that).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from gcl.data import ViewFamilies
from gcl.errors import UserError
from gcl.inputs import InputError, InputSet, list_inputs, load_rgb, resize_center_crop
from gcl.pairing import PairingError, check_family
from gcl.shardcheck import verify_once
from gcl.shardset import ShardSet, open_shard_set
from gcl.train.config import TrainConfig, default_workers, family_count, resolution
from gcl.train.epochs import DataError, EpochLoader


@dataclass
class Source:
    """What the loader reads: the core's ShardSet, or a plain --input's images (each a one-image unit).
    Exactly one of the two is set; nothing here copies their fields."""

    shard_set: ShardSet | None  # --shards
    inputs: InputSet | None  # --input (an image folder or npz, no generated views)
    size: int  # side of the square uint8 images the workers hand over (the shard resolution)

    @property
    def units(self) -> list:
        """Shard URLs, or InputItems: what the loader splits over ranks and workers."""
        return self.shard_set.urls if self.shard_set else self.inputs.items

    @property
    def counts(self) -> list[int]:
        return self.shard_set.counts if self.shard_set else [1] * len(self.inputs.items)

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    @property
    def num_views(self) -> int:
        return self.shard_set.num_views if self.shard_set else 0

    @property
    def class_names(self) -> list[str] | None:
        return self.shard_set.class_names if self.shard_set else self.inputs.class_names


def resolve_source(cfg: TrainConfig) -> Source:
    if cfg.input:
        try:
            inputs = list_inputs(cfg.input)
        except InputError as exc:
            raise DataError(str(exc)) from None
        first = next((a for a, err in map(load_rgb, inputs.items[:16]) if err is None), None)
        return Source(None, inputs, min(first.shape[:2]) if first is not None else resolution(cfg))
    try:
        shard_set = open_shard_set(list(cfg.shards), base=cfg.shards_base)
    except UserError as exc:
        raise DataError(str(exc)) from None
    if cfg.verify:
        try:
            verify_once(shard_set)
        except UserError as exc:
            raise DataError(f"{exc}, or pass --no-verify to train anyway") from None
    return Source(shard_set, None, shard_set.resolution or resolution(cfg))


def check_source(source: Source, cfg: TrainConfig, world: int) -> int:
    """Validate against the run and return steps per epoch (the same on every rank)."""
    if source.total == 0:
        what = source.shard_set.description if source.shard_set else cfg.input
        raise DataError(f"{what}: empty dataset (0 samples); check --shards / --input")
    try:
        has_orig = source.shard_set.has_orig if source.shard_set else True
        check_family(source.num_views, has_orig, cfg.gen_prob, cfg.pairing, family_count(cfg), cfg.members)
    except PairingError as exc:
        raise DataError(str(exc)) from None
    if source.shard_set and len(source.units) < world:
        raise DataError(f"{len(source.units)} shards cannot be split over {world} ranks; "
                        "write more, smaller shards (gcl-synth --shard-size)")
    steps = source.total // (cfg.batch_size * world)
    if steps == 0:
        raise DataError(f"{source.total} samples are fewer than one batch ({cfg.batch_size} x {world} ranks); "
                        "lower --batch-size")
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch > 0 else steps


class ShardUnits:
    """A shard set as the loader's units: gcl.data.ViewFamilies' order (shard order by (seed, epoch),
    one shuffle buffer per rank by (seed, epoch, rank)) and its member choice and decoding."""

    def __init__(self, source: Source, cfg: TrainConfig):
        # check_source has vetted the set against the policy; what is left to refuse is a store
        # whose package is missing (one line, see build_train_loader)
        self.families = ViewFamilies(source.shard_set, members=list(cfg.members) or None, gen_prob=cfg.gen_prob,
                                     pairing=cfg.pairing, family_views=family_count(cfg), seed=cfg.seed,
                                     shuffle_buffer=cfg.shuffle_buffer, size=source.size)

    @property
    def read_skips(self) -> int:
        return self.families.skipped  # unreadable shards and corrupt tails, counted by the reader

    def raw(self, epoch: int, pass_: int, rank: int, world: int):
        vf = self.families
        return vf.raw_families(vf.rank_shards(epoch, rank, world, pass_), f"{vf.seed}:{epoch}:{pass_}:{rank}")

    def decode(self, raw: dict, epoch: int, pass_: int):
        return self.families.decode_uint8(raw, epoch, pass_)


class InputUnits:
    """A plain --input (image folder or npz) as the loader's units: one image each, no generated views."""

    def __init__(self, source: Source, cfg: TrainConfig):
        self.items, self.size, self.seed, self.count = source.inputs.items, source.size, cfg.seed, family_count(cfg)
        self.read_skips = 0

    def raw(self, epoch: int, pass_: int, rank: int, world: int):
        order = list(range(len(self.items)))
        random.Random(f"{self.seed}:{epoch}:{pass_}").shuffle(order)
        return (self.items[i] for i in order[rank::world])

    def decode(self, item, epoch: int, pass_: int):
        arr, err = load_rgb(item)
        if err is not None:
            return None
        if arr.shape[:2] != (self.size, self.size):
            arr = resize_center_crop(arr, self.size)
        img = torch.from_numpy(np.array(arr, dtype=np.uint8, order="C", copy=True)).permute(2, 0, 1)
        return (img.expand(self.count, *img.shape), torch.zeros(self.count, dtype=torch.bool),
                -1 if item.label is None else item.label, item.source)


def build_train_loader(cfg: TrainConfig, world: int) -> tuple[EpochLoader, Source]:
    source = resolve_source(cfg)
    steps = check_source(source, cfg, world)
    nw = default_workers(cfg)  # any count gives the same batches: workers only share the decoding
    try:
        units = ShardUnits(source, cfg) if source.shard_set else InputUnits(source, cfg)
    except UserError as exc:
        raise DataError(str(exc)) from None
    return EpochLoader(units, cfg.batch_size, steps, nw), source
