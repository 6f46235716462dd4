"""Epoch batching: exactly `steps` batches per epoch from a family stream's worker chunks.

The loader owns its position (epoch, rank, world size, batches to skip when resuming mid-epoch)
as a LoaderPosition; whoever drives training hands it a new one before each epoch
(train/run.py does it from Lightning's hooks), and the stream sees it when iteration starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset

from gcl.errors import UserError


class DataError(UserError):
    """Unusable training data: the message says what to do (one line)."""


@dataclass(frozen=True)
class LoaderPosition:
    epoch: int = 0
    rank: int = 0
    world: int = 1
    skip_batches: int = 0  # > 0 only when resuming in the middle of an epoch


class EpochLoader:
    """Exactly `steps` batches per epoch from worker chunks; wraps around (next pass) if a rank's
    share runs short, like DistributedSampler's padding. Lightning sees a sized iterable.

    dataset: an IterableDataset with `epoch`, `rank`, `world` and `pass_` attributes that its
    workers read (train.data.FamilyStream), yielding chunk dicts.
    """

    def __init__(self, dataset: IterableDataset, batch_size: int, steps: int, num_workers: int):
        self.stream, self.batch_size, self.steps, self.num_workers = dataset, batch_size, steps, num_workers
        self.position = LoaderPosition()
        self.skipped = 0  # samples skipped as corrupt, summed over every epoch this loader ran

    def start_epoch(self, position: LoaderPosition) -> None:
        """Where the next iteration starts (read lazily, when the first batch is requested)."""
        self.position = position

    def __len__(self) -> int:
        return self.steps

    def _loader(self):
        nw = self.num_workers
        return DataLoader(self.stream, batch_size=None, num_workers=nw, prefetch_factor=4 if nw else None,
                          worker_init_fn=_worker_init, persistent_workers=False)

    def __iter__(self):
        ds, pos = self.stream, self.position
        ds.epoch, ds.rank, ds.world, skip = pos.epoch, pos.rank, pos.world, pos.skip_batches
        ds.pass_ = 0
        pending, produced, per_worker_skip, before = [], 0, {}, self.skipped
        while produced < self.steps:
            got = 0
            for chunk in self._loader():
                got += len(chunk["key"])
                per_worker_skip[(ds.pass_, chunk["worker"])] = chunk["skipped"]
                self.skipped = before + sum(per_worker_skip.values())
                if not chunk["key"]:
                    continue  # a chunk whose samples were all corrupt: it only carries the count
                pending.append(chunk)
                while sum(len(c["key"]) for c in pending) >= self.batch_size and produced < self.steps:
                    batch, pending = _take(pending, self.batch_size)
                    produced += 1
                    if produced > skip:
                        yield batch
                if produced >= self.steps:
                    return
            if got == 0:
                raise DataError(f"rank {ds.rank} got no readable samples in a full pass "
                                f"({self.skipped - before} skipped as corrupt); check the shards with --verify")
            ds.pass_ += 1


def _take(chunks: list[dict], n: int) -> tuple[dict, list[dict]]:
    views, generated, labels, keys, rest, need = [], [], [], [], [], n
    for c in chunks:
        if need == 0:
            rest.append(c)
            continue
        k = min(need, len(c["key"]))
        views.append(c["views"][:k])
        generated.append(c["generated"][:k])
        labels.append(c["label"][:k])
        keys += c["key"][:k]
        if k < len(c["key"]):
            rest.append({**c, "views": c["views"][k:], "generated": c["generated"][k:], "label": c["label"][k:],
                         "key": c["key"][k:]})
        need -= k
    v = torch.cat(views)
    # views: one uint8 (B, 3, S, S) per member position, not yet augmented (methods/base.py does it)
    return {"views": [v[:, i].contiguous() for i in range(v.shape[1])], "generated": torch.cat(generated),
            "label": torch.cat(labels), "key": keys}, rest


def _worker_init(_):
    import signal

    from gcl.train.stopping import die_with_parent

    torch.set_num_threads(1)  # decoding workers must not fight the training step for cores
    # the trainer's stop handlers came with the fork: a worker just ends (Ctrl-C as PyTorch expects)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    die_with_parent()
