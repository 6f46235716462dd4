"""Shards -> view families -> chosen members, decoded to uint8 tensors -> batches.

The workers only read and decode; handcrafted augmentation runs on the whole batch in the training
process (train/augment.py, called by methods/base.py), where the model is.

Order of work per epoch: shard order shuffled by (seed, epoch), shards split by rank, a sample
shuffle buffer seeded by (seed, epoch, rank), and only then decoding - of the chosen members only,
at the shard resolution (`Source.size`; other sizes are resized and centre-cropped to it).

The order is a function of (seed, epoch, rank) only, never of the number of loader workers, so the
same seed is the same experiment on any machine: every worker walks the rank's whole (cheap,
undecoded) sample sequence and decodes only its stripe of it - chunk c belongs to worker
c % num_workers - and PyTorch's DataLoader hands worker chunks back round-robin, i.e. in chunk
order. The price is that each worker reads the rank's tar bytes (not decodes them) once.
The main process cuts the chunks into exact batches and ends the epoch after `steps_per_epoch`
batches, so every rank takes the same number of steps (DDP needs that).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gcl.errors import UserError
from gcl.inputs import InputError, InputSet, list_inputs, load_rgb, resize_center_crop
from gcl.shards import ORIG, ShardReadError, decode_image, iter_samples, parse_family
from gcl.shardcheck import require_valid
from gcl.shardset import ShardSet, open_shard_set
from gcl.streams import open_stream
from gcl.train.config import TrainConfig, default_workers, family_count, resolution
from gcl.train.epochs import DataError, EpochLoader
from gcl.train.pairing import PairingError, check_family, choose_members

CHUNK = 32  # samples per worker->main transfer: amortises IPC, small enough to mix workers


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
            require_valid(shard_set, hash_bytes=True)
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


class FamilyStream(IterableDataset):
    """One rank's stream for one (epoch, pass): chunks of decoded uint8 members (N, V, 3, S, S),
    which of them are generated views (N, V), labels and keys."""

    def __init__(self, source: Source, cfg: TrainConfig):
        self.source, self.seed = source, cfg.seed
        self.gen_prob, self.pairing = cfg.gen_prob, cfg.pairing
        self.count, self.members = family_count(cfg), list(cfg.members)
        self.buffer = cfg.shuffle_buffer
        self.epoch = self.pass_ = self.rank = 0
        self.world = 1

    def rank_units(self) -> list[int]:
        order = list(range(len(self.source.units)))
        random.Random(f"{self.seed}:{self.epoch}:{self.pass_}").shuffle(order)
        return order[self.rank::self.world]

    def __iter__(self):
        info = get_worker_info()
        worker, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.manual_seed(hash((self.seed, self.epoch, self.pass_, self.rank)) & 0x7FFFFFFF)
        self.skipped = 0
        units = self.rank_units()
        reported = 0
        raw = self._shard_samples(units, worker) if self.source.shard_set else (self.source.units[i] for i in units)
        decode = self._pair if self.source.shard_set else self._input_sample
        for c, group in enumerate(_chunks(raw, CHUNK)):
            if c % nw != worker:
                continue  # another worker's stripe
            samples = [s for s in map(decode, group) if s is not None]
            # an all-corrupt chunk still goes out (empty): the round-robin order must not skip a turn
            reported = self.skipped
            yield self._chunk(samples, worker)
        if self.skipped != reported:
            # samples skipped after this worker's last chunk (a corrupt shard tail): an empty chunk
            # carries the count. It comes after every real chunk, so the order is unchanged.
            yield self._chunk([], worker)

    def _chunk(self, samples, worker):
        if not samples:
            return {"key": [], "skipped": self.skipped, "worker": worker}
        views, generated, labels, keys = zip(*samples)
        return {"views": torch.stack(views), "generated": torch.stack(generated),
                "label": torch.tensor(labels, dtype=torch.long), "key": list(keys),
                "skipped": self.skipped, "worker": worker}

    def _to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, S, S) uint8 at the source's size."""
        if arr.shape[:2] != (self.source.size, self.source.size):
            arr = resize_center_crop(arr, self.source.size)
        # a copy: decoded arrays can be read-only views, and torch must own writable memory
        return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C", copy=True)).permute(2, 0, 1)

    def _tar_error(self, exc: Exception, worker: int) -> bool:
        if worker == 0:  # every worker reads the same bytes: count (and say) it once
            self.skipped += 1
            warnings.warn(f"skipping unreadable shard data: {exc}")
        return True  # continue with the next sample / shard

    def _shard_samples(self, mine, worker):
        """The rank's raw (undecoded) families in epoch order: identical in every worker."""
        import webdataset as wds

        samples = self._read_units([self.source.units[i] for i in mine], worker)
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.pass_}:{self.rank}")
        yield from wds.shuffle(self.buffer, initial=min(self.buffer, 100), rng=rng)(samples)

    def _read_units(self, urls, worker):
        """Families from each shard URL (local path, http(s):// with bounded timeouts, a typed pipe:)
        via the shard module's fast tar reader; an unreadable shard or corrupt tail is counted, not
        fatal. A bad member (a non-UTF-8 name, bad metadata) costs only its own sample (_pair)."""
        for url in urls:
            try:
                with open_stream(url) as stream:
                    yield from iter_samples(stream)
            except (OSError, ShardReadError, ValueError) as exc:
                self._tar_error(exc, worker)

    def _pair(self, raw: dict):
        key = raw.get("__key__", "")
        try:
            images, _, label = parse_family(raw)
            rng = random.Random(f"{self.seed}:{self.epoch}:{self.pass_}:{key}")
            chosen = choose_members(rng, self.source.num_views, self.gen_prob, self.pairing, self.count, self.members)
            # decode only what is used
            decoded = {m: self._to_tensor(np.asarray(decode_image(images[m]))) for m in set(chosen)}
        except Exception as exc:  # noqa: BLE001 - a corrupt family is counted and skipped, never fatal
            self.skipped += 1
            logging.getLogger("gcl.train").info("skipped family %r: %s", key, str(exc)[:200])  # shown with -v
            return None
        generated = torch.tensor([m != ORIG for m in chosen])
        return torch.stack([decoded[m] for m in chosen]), generated, -1 if label is None else label, key

    def _input_sample(self, item):
        arr, err = load_rgb(item)
        if err is not None:
            self.skipped += 1
            logging.getLogger("gcl.train").info("skipped input %s: %s", item.source, err)  # shown with -v
            return None
        img = self._to_tensor(arr)
        return (img.expand(self.count, *img.shape), torch.zeros(self.count, dtype=torch.bool),
                -1 if item.label is None else item.label, item.source)


def _chunks(items, n: int):
    """Consecutive lists of n items (the last one shorter)."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def build_train_loader(cfg: TrainConfig, world: int) -> tuple[EpochLoader, Source]:
    source = resolve_source(cfg)
    steps = check_source(source, cfg, world)
    nw = default_workers(cfg)  # any count gives the same batches: workers only share the decoding
    return EpochLoader(FamilyStream(source, cfg), cfg.batch_size, steps, nw), source
