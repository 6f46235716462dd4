"""Labelled image sets for online evaluation: the kNN bank (--eval-train), the validation queries
that select best.ckpt (--eval-val) and the test queries that are only reported (--eval-test).

Read with the core readers (gcl.inputs, gcl.shards, gcl.manifest): gcl-train never imports gcl-eval.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from gcl.inputs import InputError, list_inputs, load_rgb, resize_center_crop
from gcl.manifest import ManifestError, load_manifest, shard_urls
from gcl.shards import ORIG, ShardReadError, decode_image, parse_family, read_shard
from gcl.train.epochs import DataError


def same_file(a: str, b: str) -> bool:
    """True when two specs name the same data (same resolved path)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _labelled_arrays(path: str):
    """(H,W,3) uint8 arrays and labels, one at a time, from an npz / ImageFolder / manifest / tar."""
    if path.endswith(".json") or path.endswith(".tar"):
        urls = shard_urls(load_manifest(path), path) if path.endswith(".json") else [path]
        for url in urls:
            try:
                families = list(read_shard(url))
            except (OSError, ShardReadError) as exc:
                raise DataError(f"online eval set: cannot read shard {url}: {exc}") from None
            for raw in families:
                members, _, label = parse_family(raw)
                if label is None:
                    raise DataError(f"online eval set {path} holds unlabelled samples")
                if ORIG in members:
                    yield np.asarray(decode_image(members[ORIG]), dtype=np.uint8), label
        return
    inputs = list_inputs(path)
    for item in inputs.items:
        if item.label is None:
            raise DataError(f"online eval set {path} has no labels (an npz needs 'labels'; a folder needs class subfolders)")
        arr, err = load_rgb(item)
        if err is None:
            yield arr, item.label


def load_labelled_set(path: str, resolution: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NCHW images at resolution x resolution and int64 labels (at most `limit` images)."""
    images, labels = [], []
    try:
        for arr, label in _labelled_arrays(path):
            images.append(resize_center_crop(arr, resolution))
            labels.append(int(label))
            if limit and len(images) >= limit:
                break
    except (InputError, ManifestError, OSError) as exc:
        raise DataError(f"online eval set {path}: {str(exc).splitlines()[0]}") from None
    if not images:
        raise DataError(f"online eval set {path} is empty (no readable labelled images)")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


def load_eval_sets(cfg, resolution: int) -> tuple[tuple, dict[str, tuple], int]:
    """(bank, {"val": queries, "test": queries} for those given, num_classes)."""
    limit = cfg.eval_limit or None
    bank = load_labelled_set(cfg.eval_train, resolution, limit)
    queries = {name: load_labelled_set(path, resolution, limit)
               for name, path in (("val", cfg.eval_val), ("test", cfg.eval_test)) if path}
    num_classes = int(max([bank[1].max()] + [q[1].max() for q in queries.values()])) + 1
    return bank, queries, num_classes

