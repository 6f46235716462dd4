"""Labelled evaluation data from an npz archive, an ImageFolder, or labelled shards (a manifest,
a pattern, a single .tar or a folder of shards, local or in an object store: s3://bucket/set),
read in batches through a torch DataLoader.

A LabelledSource never holds its images: each pass (`batches`) decodes them again, so memory
does not grow with the number of images (npz rows are read from the file one at a time). Used
by gcl-eval's probes and, through `load_labelled` (every image in one array: small sets only),
by gcl-train's online evaluation, so both read DATA the same way. Shard specs go through
gcl.shardset (the one parser, which validates manifest locations); an undecodable member is a
counted skip, never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from gcl.inputs import InputError, InputItem, list_inputs, load_image_file, npz_row, resize_center_crop
from gcl.shards import ORIG, FamilyError, ShardReadError, decode_image, iter_samples, parse_family
from gcl.shardset import ShardSet, ShardSetError, is_shard_spec, open_shard_set
from gcl.streams import MissingExtraError, StreamError, open_stream, require_readers


@dataclass
class LabelledSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    class_names: list[str] | None
    source: str
    skipped: int = 0  # unreadable files skipped while loading


class _Samples(torch.utils.data.IterableDataset):
    """(image, label) pairs of one pass, in file order; skips are counted on the source."""

    def __init__(self, source: "LabelledSource"):
        self.source = source

    def __iter__(self):
        return self.source._samples()


def _stack(pairs):
    return np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], dtype=np.int64)


class LabelledSource:
    """A labelled set read in batches: `batches(n)` yields (uint8 NHWC images, int64 labels).

    `skipped` counts the unreadable samples of the last pass (every pass skips the same ones).
    """

    def __init__(self, path: str | os.PathLike, resolution: int | None = None, limit: int | None = None):
        self.source, self.resolution, self.limit = str(path), resolution, limit
        self.skipped = 0
        self.labels: np.ndarray | None = None  # set by each complete pass
        self.shape: tuple | None = None
        self._items: list[InputItem] | None = None
        self._shards: ShardSet | None = None
        if is_shard_spec(self.source):
            try:
                self._shards = open_shard_set(self.source)
            except ShardSetError as exc:
                raise InputError(str(exc)) from None
            try:
                require_readers(self._shards.urls)  # s3:// without s3fs: one line naming the extra, before any read
            except MissingExtraError as exc:
                raise InputError(str(exc)) from None
            self.class_names = self._shards.class_names
        else:
            inputs = list_inputs(self.source)
            self._items = inputs.items[:limit] if limit else inputs.items
            if any(it.label is None for it in self._items):
                raise InputError(f"{self.source} has no labels (an npz needs 'labels'; a folder needs class subfolders)")
            self.class_names = inputs.class_names

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        loader = torch.utils.data.DataLoader(_Samples(self), batch_size=batch_size, collate_fn=_stack, num_workers=0)
        yield from loader

    def _samples(self) -> Iterator[tuple[np.ndarray, int]]:
        """One pass; when it ends, `labels` (int64) and `shape` (H, W, 3) describe what it read."""
        self.skipped, shape, labels = 0, None, []
        for arr, label in (self._item_samples() if self._items is not None else self._shard_samples()):
            if self.resolution:
                arr = resize_center_crop(arr, self.resolution)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise InputError(f"{self.source} has images of several sizes ({shape}, {arr.shape}, ...); "
                                 "pass a resolution")
            yield arr, label
            labels.append(label)
            if self.limit and len(labels) >= self.limit:
                break
        if not labels:
            raise InputError(f"{self.source} has no readable labelled images")
        self.labels, self.shape = np.asarray(labels, dtype=np.int64), shape

    def _item_samples(self):
        for it in self._items:
            arr, err = (npz_row(it.path, it.index), None) if it.index >= 0 else load_image_file(it.path)
            if err is not None:
                self.skipped += 1
                continue
            yield arr, it.label

    def _shard_samples(self):
        num_classes = len(self.class_names) if self.class_names else None
        for url in self._shards.urls:
            try:
                for raw in _shard_families(url):
                    try:
                        members, _meta, label = parse_family(raw)
                    except FamilyError:
                        self.skipped += 1  # a crafted member, metadata or label: this sample only
                        continue
                    if label is None:
                        raise InputError(f"{url} holds unlabelled samples; the probe needs labelled data")
                    if num_classes is not None and label >= num_classes:
                        self.skipped += 1  # a label past the manifest's class names would misindex them
                        continue
                    try:
                        arr = np.asarray(decode_image(members[ORIG]), dtype=np.uint8)
                    except (KeyError, ShardReadError, OSError, ValueError):
                        self.skipped += 1  # no original, or bytes that do not decode: counted, not fatal
                        continue
                    yield arr, label
            except StreamError as exc:  # a store URL: the line names it and the cause
                raise InputError(f"cannot read shard {exc}; re-run gcl-synth for it or check the URL") from None
            except (OSError, ShardReadError) as exc:
                raise InputError(f"cannot read shard {url}: {exc}; re-run gcl-synth for it or check the path") from None


def _shard_families(url: str):
    """The raw families of one shard: a local file, or a store URL streamed once (gcl.streams: bounded
    waits, retries)."""
    with open_stream(url) as fh:
        yield from iter_samples(fh)


def load_labelled(path: str | os.PathLike, resolution: int | None = None, limit: int | None = None) -> LabelledSet:
    """Every image of a labelled set in one array (small sets: online evaluation, tests).
    `resolution` resizes/crops (None keeps the stored size, which must be uniform).

    Raises InputError (one line) for unlabelled inputs or mixed sizes without `resolution`.
    """
    source = LabelledSource(path, resolution, limit)
    parts = list(source.batches(1024))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return LabelledSet(images, labels, source.class_names, source.source, source.skipped)
