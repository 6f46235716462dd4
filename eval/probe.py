"""The probe pipeline behind `gcl-eval knn|linear`: load data, check classes, features, score, save."""

from __future__ import annotations

import time

import numpy as np
import torch

from gcl.errors import UserError
from gcl.labelled import LabelledSource
from gcl.eval.features import Encoder, cached_batch_features
from gcl.knn import knn_accuracy
from gcl.eval.linear import LinearRecipe, linear_accuracy


class ProbeError(UserError):
    """Data that cannot be probed (class mismatch, unlabelled input); one-line message."""


def check_classes(train, test) -> int:
    """Number of classes; raises ProbeError when train and test disagree on the class set.
    train/test: anything with class_names, labels and source (a LabelledSet, or a LabelledSource
    after a pass)."""
    if train.class_names is not None and test.class_names is not None:
        if list(train.class_names) != list(test.class_names):
            only_train = sorted(set(train.class_names) - set(test.class_names))
            only_test = sorted(set(test.class_names) - set(train.class_names))
            detail = f"only in train: {only_train[:5]}, only in test: {only_test[:5]}" if (only_train or only_test) \
                else "same names in a different order"
            raise ProbeError(f"class sets differ between {train.source} and {test.source} ({detail})")
        return len(train.class_names)
    # Without names (e.g. a bare .tar) we can only check that every test label exists in train.
    missing = sorted(set(test.labels.tolist()) - set(train.labels.tolist()))
    if missing:
        raise ProbeError(f"test labels {missing[:10]} of {test.source} never occur in {train.source}")
    return int(max(train.labels.max(), test.labels.max())) + 1


def check_shapes(train: LabelledSource, test: LabelledSource) -> None:
    if train.shape != test.shape:
        raise ProbeError(f"train images are {train.shape[1]}x{train.shape[0]} but test images are "
                         f"{test.shape[1]}x{test.shape[0]}; pass --resolution")


def source_features(encoder: Encoder, source: LabelledSource, cache_dir, batch_size: int, progress=None, log=None):
    """(features, hit) of a labelled source, streamed in batches; afterwards source.labels and
    source.shape describe the images read (the cache's labels are the data's own: checked)."""
    feats, labels, hit = cached_batch_features(encoder, source.batches, cache_dir, batch_size, progress, log)
    source.labels = labels
    return feats, hit


def _progress(name, log):
    """Log extraction progress about every 20% (a CIFAR ResNet-18 pass takes minutes on CPU)."""
    state = {"next": 0.2, "t0": time.time()}

    def report(done, total):
        if done / total >= state["next"] and done < total:
            log(f"  {name} features: {done}/{total} ({time.time() - state['t0']:.0f} s)")
            state["next"] += 0.2

    return report


def run_probe(probe: str, encoder: Encoder, train_path: str, test_path: str, *, limit_train=None, limit_test=None,
              cache_dir=None, batch_size=256, k=20, temperature=0.07, recipe: LinearRecipe | None = None,
              log=print, progress: bool = True) -> dict:
    """Run one probe and return its result record (not yet saved)."""
    t0 = time.time()
    train = LabelledSource(train_path, encoder.resolution, limit_train)
    test = LabelledSource(test_path, encoder.resolution, limit_test)
    log(f"train: {train.source}; test: {test.source}; encoder: {encoder.describe}")
    feats = {}
    for name, ds in (("train", train), ("test", test)):
        f, hit = source_features(encoder, ds, cache_dir, batch_size, _progress(name, log) if progress else None, log)
        log(f"{name} features {tuple(f.shape)} from {len(ds.labels)} images ({'cache' if hit else 'extracted'})")
        if ds.skipped:
            log(f"{name}: skipped {ds.skipped} unreadable samples of {ds.source}")
        feats[name] = f
    check_shapes(train, test)
    num_classes = check_classes(train, test)
    log(f"{num_classes} classes")
    ytr, yte = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    if probe == "knn":
        acc = knn_accuracy(feats["train"], ytr, feats["test"], yte, num_classes, k=k, temperature=temperature)
        params = {"k": k, "T": temperature}
    elif probe == "linear":
        recipe = recipe or LinearRecipe()
        acc = linear_accuracy(feats["train"], ytr, feats["test"], yte, num_classes, recipe)
        params = {"epochs": recipe.epochs, "lr": recipe.lr, "schedule": recipe.schedule}
    else:
        raise ValueError(f"unknown probe {probe!r}")
    info = encoder.info
    return {
        "probe": probe,
        "encoder": encoder.describe,
        "encoder_id": encoder.id,
        "method": info.get("method", ""),
        "backbone": info.get("backbone", ""),
        "epoch": info.get("epoch", ""),
        "shards": info.get("shards", ""),
        "gen_prob": info.get("gen_prob", ""),
        "train": train_path,
        "test": test_path,
        "n_train": int(len(train.labels)),
        "n_test": int(len(test.labels)),
        "skipped": {"train": int(train.skipped), "test": int(test.skipped)},
        "num_classes": num_classes,
        "feature_dim": int(feats["train"].shape[1]),
        "top1": float(acc["top1"]),
        "top5": float(acc["top5"]),
        "params": params,
        "recipe": recipe.to_dict() if probe == "linear" else None,
        "extra": {k_: v for k_, v in acc.items() if k_ not in ("top1", "top5")},
        "seconds": round(time.time() - t0, 1),
        "chance_top1": float(100.0 * np.bincount(test.labels).max() / len(test.labels)),
    }
