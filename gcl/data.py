"""View families for any training loop: `ViewFamilies`, the Dataset gcl-train itself reads through.

    from gcl.data import ViewFamilies
    data = ViewFamilies("out/c10", members=["orig", "gen"], transform=my_view_transform, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=256, num_workers=8)

A shard set (a manifest, a folder, a brace pattern, a list of .tar, local or any fsspec URL through
its manifest) is read as a stream of view families. For each family the members a training step
uses are chosen exactly as gcl-train chooses them (gcl.pairing's rules: `members`,
`gen_prob`, `pairing`), decoded, and passed through `transform`.

The order of one epoch, for a rank:
1. the shard list is shuffled by (seed, epoch) and dealt to the ranks (shard i of the shuffled
   list goes to rank i % world);
2. the rank's shards are read in that order - each ONCE per epoch - and their families pass a
   shuffle buffer seeded by (seed, epoch, rank);
3. each family's members are drawn with a generator seeded by (seed, epoch, the family's key).
Under a DataLoader with N workers, the rank's shards are dealt to the workers the same way
(worker w reads shards w, w+N, ...), each with its own seeded buffer: the same seed and worker
count give the same order, and every shard is still read once. gcl-train keeps an order that does
not depend on the worker count at all: it reads the rank's stream (step 2) in its main process and
lets the workers only decode (gcl.train.data).

Shards are data from someone else: members are decoded by explicit image decoders only (never a
default handler that unpickles), a bad family is a counted skip, and an unreadable shard or
corrupt tail is a counted skip with a warning naming it.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from gcl.inputs import resize_center_crop
from gcl.pairing import PairingError, check_family, choose_members
from gcl.shards import ORIG, ShardReadError, decode_image, iter_samples, parse_family
from gcl.shardset import ShardSet, open_shard_set
from gcl.streams import open_stream, require_readers

__all__ = ["ViewFamilies", "PairingError"]


def _distributed() -> tuple[int, int]:
    """(rank, world) of a running torch.distributed job, else from RANK / WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ViewFamilies(IterableDataset):
    """An IterableDataset of `(views, label)` from a gcl shard set.

    Args:
        shards: what `gcl-train --shards` takes: a manifest .json, a shard folder, a brace pattern,
            a .tar, or a list of those; or an opened `gcl.shardset.ShardSet`.
        members: the member spec, one token per view: "orig", "gen" (a distinct generated view) or
            "gen?" (generated with probability gen_prob); overrides pairing / family_views.
        gen_prob: probability that a "gen?" member is a generated view rather than the original.
        pairing: "any", "orig+gen" or "gen+gen" (see gcl-train --pairing), with family_views views.
        transform: any callable on an RGB PIL image (torchvision v2, lightly's view transforms),
            applied to each view separately; None gives uint8 (3, H, W) tensors.
        seed: the order and the member draws (with the epoch: set_epoch).
        shuffle: shuffle shards and families (False: the manifest's order, for inspection).
        shuffle_buffer: families mixed in the shuffle buffer (per worker).
        size: resize and centre-crop every member to size x size before `transform` (None: as stored).
        shards_base: read a manifest's shards from this folder or URL instead of its own base.
        rank, world: this process's share of the shards (default: torch.distributed, else RANK /
            WORLD_SIZE from the environment, else the whole set).

    Each item is `(views, label)`: a list with one entry per chosen member, and the class index
    (-1 for an unlabelled set). `skipped` counts the families (or shards) this process dropped.
    """

    def __init__(self, shards: str | Sequence[str] | ShardSet, *, members: Sequence[str] | None = None,
                 gen_prob: float = 0.5, pairing: str = "any", family_views: int = 2,
                 transform: Callable[[Any], Any] | None = None, seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 1000, size: int | None = None, shards_base: str | None = None,
                 rank: int | None = None, world: int | None = None):
        self.shard_set = shards if isinstance(shards, ShardSet) else open_shard_set(
            [shards] if isinstance(shards, (str, os.PathLike)) else list(shards), base=shards_base)
        require_readers(self.shard_set.urls)  # a missing s3fs & co. is one line now, not a skip per shard
        self.members = list(members) if members else None
        self.count = len(self.members) if self.members else family_views
        self.gen_prob, self.pairing = gen_prob, pairing
        check_family(self.shard_set.num_views, self.shard_set.has_orig, gen_prob, pairing, self.count, self.members)
        self.transform, self.seed, self.shuffle, self.buffer = transform, seed, shuffle, shuffle_buffer
        self.size, self._rank, self._world = size, rank, world
        self.epoch, self.skipped = 0, 0

    # ------------------------------------------------------------------ the order
    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (another epoch: another shard order and other draws)."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Families in the whole set (all ranks)."""
        return self.shard_set.total

    def rank_shards(self, epoch: int, rank: int, world: int, pass_: int = 0) -> list[str]:
        """The shard URLs of one rank in the order it reads them (pass_ > 0: a rank that wraps around)."""
        order = list(range(len(self.shard_set.urls)))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}:{pass_}").shuffle(order)
        return [self.shard_set.urls[i] for i in order[rank::world]]

    def raw_families(self, urls: Sequence[str], stream_seed: str) -> Iterator[dict]:
        """Undecoded families of `urls`, each shard read once, through the seeded shuffle buffer."""
        families = self._read(urls)
        if not self.shuffle:
            return families
        import webdataset as wds

        rng = random.Random(stream_seed)
        return wds.shuffle(self.buffer, initial=min(self.buffer, 100), rng=rng)(families)

    def _read(self, urls: Sequence[str]) -> Iterator[dict]:
        """Families of each shard in turn; an unreadable shard or corrupt tail is counted and named."""
        for url in urls:
            stream = None
            try:
                stream = open_stream(url)
                yield from iter_samples(stream)
                stream, finished = None, stream
                finished.close()  # a typed pipe:'s exit status is checked here
            except (OSError, ShardReadError, ValueError) as exc:
                self.skipped += 1
                warnings.warn(f"skipping unreadable shard data: {exc}", stacklevel=2)
            finally:
                if stream is not None:  # left early (an error, or the reader stopped): no status to check
                    _close_quietly(stream)

    # ------------------------------------------------------------------ one family
    def choose(self, raw: dict, epoch: int, pass_: int = 0) -> tuple[list[str], dict, int]:
        """(chosen member names, member -> image bytes, label) of one raw family; the draw depends on
        (seed, epoch, pass_, key) only. Raises on a family that cannot be used (count it, skip it)."""
        images, _, label = parse_family(raw)
        rng = random.Random(f"{self.seed}:{epoch}:{pass_}:{raw.get('__key__', '')}")
        chosen = choose_members(rng, self.shard_set.num_views, self.gen_prob, self.pairing, self.count, self.members)
        return chosen, images, -1 if label is None else label

    def decode_uint8(self, raw: dict, epoch: int, pass_: int = 0):
        """(views (V, 3, S, S) uint8, generated (V,) bool, label, key) of one family, or None when it
        is unusable (the caller counts it): what gcl-train batches."""
        try:
            chosen, images, label = self.choose(raw, epoch, pass_)
            decoded = {m: self._tensor(decode_image(images[m])) for m in set(chosen)}  # decode only what is used
        except Exception as exc:  # noqa: BLE001 - a corrupt family is skipped, never fatal
            _log_skip(raw, exc)
            return None
        generated = torch.tensor([m != ORIG for m in chosen])
        return torch.stack([decoded[m] for m in chosen]), generated, label, raw.get("__key__", "")

    def _tensor(self, img) -> torch.Tensor:
        """A PIL image -> (3, S, S) uint8 at `size` (as stored when size is None)."""
        arr = np.asarray(img)
        if self.size and arr.shape[:2] != (self.size, self.size):
            arr = resize_center_crop(arr, self.size)
        # a copy: decoded arrays can be read-only views, and torch must own writable memory
        return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C", copy=True)).permute(2, 0, 1)

    def _item(self, raw: dict):
        try:
            chosen, images, label = self.choose(raw, self.epoch)
            decoded = {m: decode_image(images[m]) for m in set(chosen)}
        except Exception as exc:  # noqa: BLE001 - counted and skipped, like gcl-train
            self.skipped += 1
            _log_skip(raw, exc)
            return None
        if self.transform is None:
            return [self._tensor(decoded[m]) for m in chosen], label
        if self.size:
            decoded = {m: _resized(img, self.size) for m, img in decoded.items()}
        return [self.transform(decoded[m]) for m in chosen], label

    # ------------------------------------------------------------------ as a Dataset
    def __iter__(self):
        rank, world = _distributed()
        rank = self._rank if self._rank is not None else rank
        world = self._world if self._world is not None else world
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        stream_seed = f"{self.seed}:{self.epoch}:0:{rank}" + (f":{worker}/{workers}" if workers > 1 else "")
        mine = self.rank_shards(self.epoch, rank, world)[worker::workers]
        for raw in self.raw_families(mine, stream_seed):
            item = self._item(raw)
            if item is not None:
                yield item


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - a stream given up on: its close status says nothing new
        pass


def _resized(img, size: int):
    from PIL import Image

    if img.size == (size, size):
        return img
    return Image.fromarray(resize_center_crop(np.asarray(img), size))


def _log_skip(raw: dict, exc: Exception) -> None:
    """One line per skipped family, shown at INFO (gcl-train -v); the counts are always reported."""
    logging.getLogger("gcl.data").info("skipped family %r: %s", raw.get("__key__", ""), str(exc)[:200])
