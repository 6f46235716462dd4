"""Shards -> view families -> chosen views -> handcrafted augmentation -> batches.

Order of work per epoch (all of it a function of seed + epoch, so a resumed run sees the same
data): shard order shuffled by (seed, epoch), shards split by rank then by worker, a sample
shuffle buffer, and only then decoding - of the chosen members only. Each worker yields small
uint8 chunks; the main process cuts them into exact batches and ends the epoch after
`steps_per_epoch` batches, so every rank takes the same number of steps (DDP needs that).
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gcl.inputs import InputError, list_inputs, load_rgb
from gcl.errors import UserError
from gcl.manifest import ManifestError
from gcl.shards import ShardReadError, decode_image, iter_samples, parse_family
from gcl.shardset import open_shard_set, require_valid
from gcl.train.augment import ViewAugmenter
from gcl.train.config import TrainConfig, default_workers
from gcl.train.epochs import DataError, EpochLoader
from gcl.train.pairing import PairingError, check_family, choose_members

CHUNK = 32  # samples per worker->main transfer: amortises IPC, small enough to mix workers


@dataclass
class Source:
    kind: str  # "shards" | "input"
    units: list  # shard urls, or InputItems for a plain input
    counts: list[int]  # samples per unit
    num_views: int = 0
    has_orig: bool = True
    class_names: list[str] | None = None
    description: str = ""

    @property
    def total(self) -> int:
        return int(sum(self.counts))


def resolve_source(cfg: TrainConfig) -> Source:
    if cfg.input:
        try:
            inputs = list_inputs(cfg.input)
        except InputError as exc:
            raise DataError(str(exc)) from None
        return Source("input", inputs.items, [1] * len(inputs.items), 0, True, inputs.class_names, cfg.input)
    try:
        shard_set = open_shard_set(list(cfg.shards), base=cfg.shards_base)
        if cfg.verify:
            require_valid(shard_set, hash_bytes=True)
    except UserError as exc:
        raise DataError(str(exc)) from None
    return Source("shards", shard_set.urls, shard_set.counts, shard_set.num_views, shard_set.has_orig,
                  shard_set.class_names, shard_set.description)


def check_source(source: Source, cfg: TrainConfig, world: int) -> int:
    """Validate against the run and return steps per epoch (the same on every rank)."""
    if source.total == 0:
        raise DataError(f"{source.description}: empty dataset (0 samples); check --shards / --input")
    count = cfg.family_views or 2
    try:
        check_family(source.num_views, source.has_orig, cfg.gen_prob, cfg.pairing, count)
    except PairingError as exc:
        raise DataError(str(exc)) from None
    if source.kind == "shards" and len(source.units) < world:
        raise DataError(f"{len(source.units)} shards cannot be split over {world} ranks; "
                        "write more, smaller shards (gcl-synth --shard-size)")
    steps = source.total // (cfg.batch_size * world)
    if steps == 0:
        raise DataError(f"{source.total} samples are fewer than one batch ({cfg.batch_size} x {world} ranks); "
                        "lower --batch-size")
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch > 0 else steps


class FamilyStream(IterableDataset):
    """One rank's stream for one (epoch, pass): chunks of augmented views, labels and keys."""

    def __init__(self, source: Source, cfg: TrainConfig):
        self.source, self.seed = source, cfg.seed
        self.gen_prob, self.pairing = cfg.gen_prob, cfg.pairing
        self.count = cfg.family_views or 2
        self.buffer = cfg.shuffle_buffer
        self.augment = ViewAugmenter(cfg.augmentations)
        self.epoch = self.pass_ = self.rank = 0
        self.world = 1

    def rank_units(self) -> list[int]:
        order = list(range(len(self.source.units)))
        random.Random(f"{self.seed}:{self.epoch}:{self.pass_}").shuffle(order)
        return order[self.rank::self.world]

    def __iter__(self):
        info = get_worker_info()
        worker, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.manual_seed(hash((self.seed, self.epoch, self.pass_, self.rank, worker)) & 0x7FFFFFFF)
        mine = self.rank_units()[worker::nw]
        self.skipped = 0
        raw = self._shard_samples(mine, worker) if self.source.kind == "shards" else self._input_samples(mine)
        views, labels, keys = [], [], []
        for sample in raw:
            views.append(sample[0])
            labels.append(sample[1])
            keys.append(sample[2])
            if len(keys) == CHUNK:
                yield self._chunk(views, labels, keys, worker)
                views, labels, keys = [], [], []
        if keys:
            yield self._chunk(views, labels, keys, worker)

    def _chunk(self, views, labels, keys, worker):
        return {"views": torch.stack(views), "label": torch.tensor(labels, dtype=torch.long), "key": keys,
                "skipped": self.skipped, "worker": worker}

    def _tar_error(self, exc: Exception) -> bool:
        self.skipped += 1
        warnings.warn(f"skipping unreadable shard data: {exc}")
        return True  # continue with the next sample / shard

    def _shard_samples(self, mine, worker):
        import webdataset as wds

        samples = self._read_units([self.source.units[i] for i in mine])
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.pass_}:{self.rank}:{worker}")
        samples = wds.shuffle(self.buffer, initial=min(self.buffer, 100), rng=rng)(samples)
        for s in samples:
            out = self._pair(s)
            if out is not None:
                yield out

    def _read_units(self, urls):
        """Families from each shard URL (local path, http(s)://, pipe:) via webdataset's gopen and
        the shard module's fast tar reader; an unreadable shard or corrupt tail is counted, not fatal."""
        from webdataset.gopen import gopen

        for url in urls:
            try:
                with gopen(url, "rb") as stream:
                    yield from iter_samples(stream)
            except (OSError, ShardReadError, ValueError) as exc:
                self._tar_error(exc)

    def _pair(self, raw: dict):
        key = raw.get("__key__", "")
        try:
            images, _, label = parse_family(raw)
            rng = random.Random(f"{self.seed}:{self.epoch}:{self.pass_}:{key}")
            chosen = choose_members(rng, self.source.num_views, self.gen_prob, self.pairing, self.count)
            decoded = {m: decode_image(images[m]) for m in set(chosen)}  # decode only what is used
        except Exception:  # noqa: BLE001 - a corrupt family is counted and skipped, never fatal
            self.skipped += 1
            return None
        return self.augment([decoded[m] for m in chosen]), -1 if label is None else label, key

    def _input_samples(self, mine):
        from PIL import Image

        perm = list(mine)
        for i in perm:
            item = self.source.units[i]
            arr, err = load_rgb(item)
            if err is not None:
                self.skipped += 1
                continue
            img = Image.fromarray(arr)
            yield self.augment([img] * self.count), -1 if item.label is None else item.label, item.source


def build_train_loader(cfg: TrainConfig, world: int) -> tuple[EpochLoader, Source]:
    source = resolve_source(cfg)
    steps = check_source(source, cfg, world)
    nw = default_workers(cfg)
    if source.kind == "shards":
        nw = min(nw, max(1, len(source.units) // world))  # a worker without a shard would idle
    return EpochLoader(FamilyStream(source, cfg), cfg.batch_size, steps, nw), source


def load_eval_sets(cfg: TrainConfig, resolution: int):
    """(bank images, bank labels, test images, test labels, num_classes) as uint8 NCHW tensors."""
    from gcl.labelled import load_labelled

    sets = []
    for path in (cfg.eval_train, cfg.eval_test):
        try:
            s = load_labelled(path, resolution=resolution, limit=cfg.eval_limit or None)
        except (InputError, ManifestError, OSError) as exc:
            raise DataError(f"online eval set {path}: {exc}") from None
        if len(s.labels) == 0:
            raise DataError(f"online eval set {path} is empty")
        sets.append((torch.from_numpy(np.ascontiguousarray(s.images)).permute(0, 3, 1, 2).contiguous(),
                     torch.from_numpy(s.labels).long()))
    num_classes = int(max(sets[0][1].max(), sets[1][1].max())) + 1
    return sets[0][0], sets[0][1], sets[1][0], sets[1][1], num_classes
