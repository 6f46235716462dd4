"""Labelled evaluation data from an npz archive, an ImageFolder, or labelled shards (a manifest,
a pattern, a single .tar or a folder of shards), loaded into memory as uint8 arrays.

Used by gcl-eval's probes and by gcl-train's online evaluation, so both read DATA the same way.
Shard specs go through gcl.shardset (the one parser, which validates manifest locations); an
undecodable member is a counted skip, never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from gcl.inputs import InputError, list_inputs, load_rgb, resize_center_crop
from gcl.shards import ORIG, FamilyError, ShardReadError, decode_image, parse_family, read_shard
from gcl.shardset import ShardSetError, is_shard_spec, open_shard_set


@dataclass
class LabelledSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    class_names: list[str] | None
    source: str
    skipped: int = 0  # unreadable files skipped while loading


def load_labelled(path: str | os.PathLike, resolution: int | None = None, limit: int | None = None) -> LabelledSet:
    """Load labelled images; `resolution` resizes/crops (None keeps the stored size, which must be uniform).

    Raises InputError (one line) for unlabelled inputs or mixed sizes without `resolution`.
    """
    path = str(path)
    if is_shard_spec(path):
        return _load_shards(path, resolution, limit)
    inputs = list_inputs(path)
    items = inputs.items[:limit] if limit else inputs.items
    if any(it.label is None for it in items):
        raise InputError(f"{path} has no labels (an npz needs 'labels'; a folder needs class subfolders)")
    images, labels, skipped = [], [], 0
    for it in items:
        arr, err = load_rgb(it)
        if err is not None:
            skipped += 1
            continue
        images.append(resize_center_crop(arr, resolution) if resolution else arr)
        labels.append(it.label)
    return _stack(images, labels, inputs.class_names, path, skipped)


def _load_shards(path: str, resolution: int | None, limit: int | None) -> LabelledSet:
    try:
        shard_set = open_shard_set(path)
    except ShardSetError as exc:
        raise InputError(str(exc)) from None
    if not shard_set.local:
        raise InputError(f"{path}: evaluation reads local shards only")
    images, labels, skipped = [], [], 0
    num_classes = len(shard_set.class_names) if shard_set.class_names else None
    for url in shard_set.urls:
        try:
            for raw in read_shard(url):
                try:
                    members, _meta, label = parse_family(raw)
                except FamilyError:
                    skipped += 1  # a crafted member, metadata or label: this sample only
                    continue
                if label is None:
                    raise InputError(f"{url} holds unlabelled samples; the probe needs labelled data")
                if num_classes is not None and label >= num_classes:
                    skipped += 1  # a label past the manifest's class names would misindex them
                    continue
                try:
                    arr = np.asarray(decode_image(members[ORIG]), dtype=np.uint8)
                except (KeyError, ShardReadError, OSError, ValueError):
                    skipped += 1  # no original, or bytes that do not decode: counted, not fatal
                    continue
                images.append(resize_center_crop(arr, resolution) if resolution else arr)
                labels.append(label)
                if limit and len(images) >= limit:
                    return _stack(images, labels, shard_set.class_names, path, skipped)
        except (OSError, ShardReadError) as exc:
            raise InputError(f"cannot read shard {url}: {exc}; re-run gcl-synth for it or check the path") from None
    return _stack(images, labels, shard_set.class_names, path, skipped)


def _stack(images, labels, class_names, source, skipped) -> LabelledSet:
    if not images:
        raise InputError(f"{source} has no readable labelled images")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(f"{source} has images of several sizes {sorted(shapes)[:3]}...; pass a resolution")
    return LabelledSet(np.stack(images), np.asarray(labels, dtype=np.int64), class_names, source, skipped)
