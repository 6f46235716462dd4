"""Epoch batching: exactly `steps` batches per epoch, read once, decoded by the loader workers.

The loader owns its position (epoch, rank, world size, batches to skip when resuming mid-epoch)
as a LoaderPosition; whoever drives training hands it a new one before each epoch
(train/run.py does it from Lightning's hooks), and the reader sees it when iteration starts.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from gcl.errors import UserError


class DataError(UserError):
    """Unusable training data: the message says what to do (one line)."""


@dataclass(frozen=True)
class LoaderPosition:
    epoch: int = 0
    rank: int = 0
    world: int = 1
    skip_batches: int = 0  # > 0 only when resuming in the middle of an epoch


CHUNK = 32  # families per decode task: amortises the hand-over to a worker, small enough to mix
READ_AHEAD = 16  # chunks the reader thread keeps ready beyond those the workers are decoding


class EpochLoader:
    """Exactly `steps` batches per epoch; wraps around (next pass) if a rank's share runs short, like
    DistributedSampler's padding. Lightning sees a sized iterable.

    units: the rank's raw samples and how to decode one (train.data.ShardUnits or InputUnits).
    Per pass, one reader thread in this process reads the rank's stream - every shard once - and
    cuts it into chunk tasks; the DataLoader's workers only decode them and hand them back in task
    order. So the batches are the same for any number of workers, and the shards are read once.
    """

    def __init__(self, units, batch_size: int, steps: int, num_workers: int):
        self.units, self.batch_size, self.steps, self.num_workers = units, batch_size, steps, num_workers
        self.position = LoaderPosition()
        self.skipped = 0  # samples skipped as corrupt, summed over every epoch this loader ran

    def start_epoch(self, position: LoaderPosition) -> None:
        """Where the next iteration starts (read lazily, when the first batch is requested)."""
        self.position = position

    def __len__(self) -> int:
        return self.steps

    def _loader(self, feed: "TaskFeed"):
        nw = self.num_workers
        # the generator keeps the DataLoader from drawing its worker seeds from the global RNG
        return DataLoader(ChunkDecoder(self.units), batch_size=None, sampler=feed, num_workers=nw,
                          prefetch_factor=4 if nw else None, worker_init_fn=_worker_init,
                          persistent_workers=False, generator=torch.Generator().manual_seed(0))

    def __iter__(self):
        pos = self.position
        pending, produced = [], 0
        for pass_ in itertools.count():
            # one reader per pass: a rank that wraps around starts reading again only when it must
            feed, got = TaskFeed(self.units, pos, pass_), 0
            try:
                for chunk in self._loader(feed):
                    self.skipped += chunk["skipped"]
                    got += len(chunk["key"])
                    if not chunk["key"]:
                        continue  # a chunk whose samples were all corrupt: it only carries the count
                    pending.append(chunk)
                    while sum(len(c["key"]) for c in pending) >= self.batch_size and produced < self.steps:
                        batch, pending = _take(pending, self.batch_size)
                        produced += 1
                        if produced > pos.skip_batches:
                            yield batch
                    if produced >= self.steps:
                        return
            finally:
                feed.stop()
            if got == 0:
                raise DataError(f"rank {pos.rank} got no readable samples in a full pass "
                                f"({self.skipped} skipped as corrupt); check the shards with --verify")


class TaskFeed:
    """The DataLoader's sampler: decode tasks (epoch, pass, raw samples, skipped) of one pass over
    the rank's shards, in epoch order, read ahead by one background thread; None ends the pass."""

    def __init__(self, units, position: LoaderPosition, pass_: int):
        self.units, self.position, self.pass_ = units, position, pass_
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self):
        tasks: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        thread = threading.Thread(target=self._read, args=(tasks,), daemon=True, name="gcl-shard-reader")
        thread.start()
        try:
            while True:
                task = tasks.get()
                if task is None:
                    return
                if isinstance(task, BaseException):
                    raise task
                yield task
        finally:
            self._stop.set()

    def _put(self, tasks: queue.Queue, task) -> bool:
        while not self._stop.is_set():
            try:
                tasks.put(task, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, tasks: queue.Queue) -> None:
        pos, units = self.position, self.units
        try:
            seen, raw = units.read_skips, units.raw(pos.epoch, self.pass_, pos.rank, pos.world)
            for group in _chunks(raw, CHUNK):
                skipped, seen = units.read_skips - seen, units.read_skips
                if not self._put(tasks, (pos.epoch, self.pass_, group, skipped)):
                    raw.close()  # stopped: the open shard is closed now, not when collected
                    return
            # skips after the last chunk (a corrupt shard tail) travel in an empty task
            if units.read_skips > seen and not self._put(tasks, (pos.epoch, self.pass_, [], units.read_skips - seen)):
                return
            self._put(tasks, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, raised there
            self._put(tasks, exc)


class ChunkDecoder(Dataset):
    """What a worker does with a task: decode its samples into one chunk of uint8 tensors."""

    def __init__(self, units):
        self.units = units

    def __len__(self) -> int:
        return 0  # tasks come from the TaskFeed sampler, never from an index range

    def __getitem__(self, task) -> dict:
        epoch, pass_, raws, skipped = task
        samples = [s for s in (self.units.decode(r, epoch, pass_) for r in raws) if s is not None]
        out = {"key": [], "skipped": skipped + len(raws) - len(samples)}
        if samples:
            views, generated, labels, keys = zip(*samples)
            out.update(views=torch.stack(views), generated=torch.stack(generated),
                       label=torch.tensor(labels, dtype=torch.long), key=list(keys))
        return out


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
