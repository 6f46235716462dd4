"""Frozen features for the probes: from a gcl-train checkpoint, a random-init backbone, or raw pixels.

Features are extracted once per (encoder, data) pair and cached as a .safetensors file whose name
is keyed by the checkpoint's sha256 and a fingerprint of the data (image bytes + labels), so
repeated kNN / linear probes on the same checkpoint cost one extraction.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from gcl.errors import UserError
from gcl.io import sha256_file

# CIFAR-10 statistics (0-1 scale) used for the baselines, which have no training run to take them
# from; the shared JPEG copy's values differ from the official ones by < 0.3/255 (data README).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# 256 images per forward pass keeps a CIFAR ResNet-18 under ~1.5 GB of activations on CPU.
DEFAULT_BATCH = 256


class EncoderError(UserError):
    """A checkpoint or run folder that cannot be turned into an encoder (one-line user error)."""


@dataclass
class Encoder:
    """Something that maps uint8 NHWC images to (N, D) features, and a stable id for caching."""

    id: str  # cache key part: checkpoint sha / baseline name
    describe: str  # human-readable: path or "random-init resnet18 (seed 0)"
    forward: Callable[[np.ndarray], torch.Tensor]
    resolution: int | None  # images are loaded at this size (None: as stored)
    info: dict = field(default_factory=dict)
    sha256: str = ""  # the checkpoint file's full sha256 (empty for the baselines)

    @property
    def key(self) -> str:
        """What a feature cache must have been made by: the checkpoint's full sha256, else the id."""
        return self.sha256 or self.id


def resolve_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """A .ckpt file as given, or the checkpoint a run folder points to.

    In a run folder we take checkpoints/last.ckpt (the run's final state: what a reported number
    must come from, since best.ckpt was chosen on a metric); which="best" asks for best.ckpt
    (selected on held-out validation queries, never on the test set) and fails if it is missing.
    Without either, the newest *.ckpt anywhere under the folder.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise EncoderError(f"checkpoint not found: {p}")
    if which not in ("last", "best"):
        raise EncoderError(f"unknown checkpoint choice {which!r}; use 'last' or 'best'")
    for cand in (p / "checkpoints" / f"{which}.ckpt", p / f"{which}.ckpt"):
        if cand.is_file():
            return cand
    if which == "best":
        raise EncoderError(f"{p} has no best.ckpt (a run selects one only with --eval-val); use its last.ckpt")
    found = sorted(p.rglob("*.ckpt"), key=lambda q: q.stat().st_mtime)
    if not found:
        raise EncoderError(f"no .ckpt file under run folder {p}")
    return found[-1]


def load_checkpoint(path: str | os.PathLike, which: str = "last") -> tuple[Path, torch.nn.Module, dict]:
    """(checkpoint file, backbone in eval mode, info) of a .ckpt or run folder; one-line EncoderError."""
    from gcl.checkpoint import load_backbone

    ckpt = resolve_checkpoint(path, which)
    try:
        net, info = load_backbone(str(ckpt))
    except Exception as exc:  # noqa: BLE001 - unpickling/shape/key errors all mean "not a usable checkpoint"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights only load failed" in msg.lower() or "unpickl" in type(exc).__name__.lower():
            msg = "not a gcl-train checkpoint (torch.load(weights_only=True) cannot read it)"
        raise EncoderError(f"cannot load {ckpt}: {msg}") from None
    return ckpt, net, info


def checkpoint_encoder(path: str | os.PathLike, device: str = "cpu") -> Encoder:
    from gcl.checkpoint import preprocess

    ckpt, net, info = load_checkpoint(path)
    sha = sha256_file(ckpt)
    return Encoder(
        id=sha[:16],
        sha256=sha,
        describe=str(ckpt),
        forward=_backbone_forward(net, lambda x: preprocess(x, info), device),
        resolution=int(info["resolution"]) if info.get("resolution") else None,
        info=info,
    )


def random_encoder(backbone: str, cifar_stem: bool = True, seed: int = 0, resolution: int | None = None,
                   device: str = "cpu") -> Encoder:
    """Randomly initialised backbone (torchvision default init, fixed seed), BN in eval mode.

    The floor every trained number must beat: random conv features already carry some signal.
    """
    from gcl.backbones import build_backbone
    from gcl.checkpoint import preprocess

    torch.manual_seed(seed)
    try:
        net, _ = build_backbone(backbone, cifar_stem, resolution)
    except ValueError as exc:
        raise EncoderError(str(exc)) from None
    net.eval()
    info = {"method": "random-init", "backbone": backbone, "cifar_stem": cifar_stem, "epoch": 0,
            "resolution": resolution or 32, "mean": CIFAR_MEAN, "std": CIFAR_STD}
    return Encoder(
        id=f"random-{backbone}-{'cifar' if cifar_stem else 'imnet'}-s{seed}-r{info['resolution']}",
        describe=f"random-init {backbone} (seed {seed})",
        forward=_backbone_forward(net, lambda x: preprocess(x, info), device),
        resolution=info["resolution"],
        info=info,
    )


def raw_pixel_encoder(resolution: int | None = None) -> Encoder:
    """Flattened pixels, standardised per channel with CIFAR mean/std.

    Standardising matters for cosine kNN: on raw [0,1] pixels every vector points into the
    positive orthant and the cosine mostly measures overall colour/brightness.
    """
    mean = torch.tensor(CIFAR_MEAN).view(1, 1, 1, 3)
    std = torch.tensor(CIFAR_STD).view(1, 1, 1, 3)

    def forward(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        return ((x - mean) / std).flatten(1)

    return Encoder(id=f"raw-pixels-r{resolution or 'native'}", describe="raw pixels (standardised)",
                   forward=forward, resolution=resolution, info={"method": "raw-pixels", "epoch": 0})


def _backbone_forward(net: torch.nn.Module, prep: Callable[[np.ndarray], torch.Tensor], device: str = "cpu"):
    try:
        net.to(device)
    except (RuntimeError, AssertionError) as exc:  # e.g. cuda requested on a CPU-only torch
        raise EncoderError(f"cannot use device {device!r}: {str(exc).splitlines()[0]}") from None

    def forward(images: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():  # fp32 everywhere: features are compared across runs
            return net(prep(images).to(device)).float().cpu()

    return forward


class DataFingerprint:
    """sha256 of a labelled set fed in batches: image bytes and labels hashed as they stream by,
    then combined with the set's shape, so a set never has to be in memory to be identified."""

    def __init__(self):
        self._images, self._labels = hashlib.sha256(), hashlib.sha256()
        self.count, self.image_shape = 0, None

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        self._images.update(memoryview(np.ascontiguousarray(images)).cast("B"))
        self._labels.update(np.asarray(labels, dtype=np.int64).tobytes())
        self.count += len(images)
        self.image_shape = tuple(images.shape[1:])

    def hexdigest(self) -> str:
        h = hashlib.sha256(str((self.count, *(self.image_shape or ()))).encode())
        h.update(self._images.digest())
        h.update(self._labels.digest())
        return h.hexdigest()


def data_fingerprint(images: np.ndarray, labels: np.ndarray, full: bool = False) -> str:
    fp = DataFingerprint()
    fp.add(images, labels)
    return fp.hexdigest() if full else fp.hexdigest()[:16]


Batches = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]  # batch size -> (images, labels) batches


def array_batches(images: np.ndarray, labels: np.ndarray) -> Batches:
    return lambda bs: ((images[i:i + bs], np.asarray(labels[i:i + bs])) for i in range(0, len(images), bs))


def extract(encoder: Encoder, batches: Batches, batch_size: int = DEFAULT_BATCH, total: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """(N, D) float32 features and the (N,) labels of one pass over the batches. With `total` the
    feature matrix is allocated once (no list of parts to concatenate: half the peak memory)."""
    feats, parts, labels, done = None, [], [], 0
    for images, batch_labels in batches(batch_size):
        out = encoder.forward(images).float().cpu()
        if total is not None:
            feats = torch.empty((total, out.shape[1]), dtype=torch.float32) if feats is None else feats
            feats[done:done + len(out)] = out
        else:
            parts.append(out)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
        done += len(out)
        if progress:
            progress(done, total or done)
    return (feats if total is not None else torch.cat(parts)), np.concatenate(labels)


def cached_features(encoder: Encoder, images: np.ndarray, labels: np.ndarray, cache_dir: str | os.PathLike | None,
                    batch_size: int = DEFAULT_BATCH, progress=None, log=None) -> tuple[torch.Tensor, bool]:
    """cached_batch_features for arrays in memory. Returns (features, hit)."""
    feats, _labels, hit = cached_batch_features(encoder, array_batches(images, labels), cache_dir, batch_size,
                                                progress, log)
    return feats, hit


def cached_batch_features(encoder: Encoder, batches: Batches, cache_dir: str | os.PathLike | None,
                          batch_size: int = DEFAULT_BATCH, progress=None, log=None) -> tuple[torch.Tensor, np.ndarray, bool]:
    """Features from the cache file if it is this encoder's on this data, else extracted (and
    cached when cache_dir is set). Returns (features, labels, hit). With a cache the data is read
    twice (fingerprint, then features on a miss), never held whole: memory is the feature matrix.

    A cache may come with a run folder someone sent, so a file is used only when its metadata
    names the encoder's full key (the checkpoint's sha256) and the data's full fingerprint, its
    features are (N, D) float32 with the encoder's width D, its labels are the data's, and
    SPOT_CHECK_ROWS rows picked at random now match features computed now. Anything else is
    logged, ignored and replaced.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    if cache_dir is None:
        feats, labels = extract(encoder, batches, batch_size, None, progress)
        return feats, labels, False
    fingerprint, labels, spot = _scan(batches, batch_size)
    path = Path(cache_dir) / f"{encoder.id}-{fingerprint[:16]}.safetensors"
    if path.is_file():
        try:
            return _checked_cache(path, encoder, labels, fingerprint, spot), labels, True
        except (CacheMismatch, SafetensorError, OSError, KeyError, ValueError) as exc:
            if log:
                log(f"ignoring feature cache {path.name}: {exc}")
    feats, extracted_labels = extract(encoder, batches, batch_size, len(labels), progress)
    if not np.array_equal(extracted_labels, labels):
        raise UserError("the data changed between two reads of it (labels differ); evaluate a set that is not being written")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    save_file({"features": feats.contiguous(), "labels": torch.from_numpy(labels)},
              str(tmp), metadata={"encoder": encoder.describe, "encoder_key": encoder.key, "data": fingerprint,
                                  "n": str(len(labels)), "width": str(feats.shape[1])})
    os.replace(tmp, path)
    return feats, labels, False


def _scan(batches: Batches, batch_size: int) -> tuple[str, np.ndarray, dict[int, np.ndarray]]:
    """One pass: the data's fingerprint, its labels, and SPOT_CHECK_ROWS rows drawn uniformly at
    random (reservoir sampling) with their images, for checking a cache without a second pass."""
    fp, labels, spot = DataFingerprint(), [], {}
    rng = random.SystemRandom()
    for images, batch_labels in batches(batch_size):
        for j in range(len(images)):
            row = fp.count + j
            if row < SPOT_CHECK_ROWS:
                spot[row] = images[j].copy()
            else:
                victim = rng.randrange(row + 1)
                if victim < SPOT_CHECK_ROWS:
                    spot.pop(sorted(spot)[victim])
                    spot[row] = images[j].copy()
        fp.add(images, batch_labels)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return fp.hexdigest(), np.concatenate(labels), spot


# Rows recomputed to check a cache: forged features must then be right on rows chosen at load
# time, i.e. everywhere. Costs one small forward pass.
SPOT_CHECK_ROWS = 4
# Relative distance allowed between a cached and a recomputed row: other devices and kernels
# (TF32 on GPUs) move features by ~1e-3 relative; a forged row is off by order 1.
SPOT_CHECK_TOLERANCE = 2e-2


class CacheMismatch(ValueError):
    """A feature cache file that is not this encoder's features of this data."""


def _checked_cache(path: Path, encoder: Encoder, labels: np.ndarray, fingerprint: str, spot: dict[int, np.ndarray]):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("encoder_key") != encoder.key:
        raise CacheMismatch("made by another encoder (or without the encoder's sha256)")
    if meta.get("data") != fingerprint:
        raise CacheMismatch("made on other data")
    tensors = load_file(str(path))
    feats, cached_labels = tensors["features"], tensors["labels"]
    if feats.dtype != torch.float32 or feats.ndim != 2 or feats.shape[0] != len(labels):
        raise CacheMismatch(f"holds {tuple(feats.shape)} {feats.dtype} features for {len(labels)} images")
    if not torch.equal(cached_labels, torch.from_numpy(np.asarray(labels, dtype=np.int64))):
        raise CacheMismatch("its labels differ from the data's")
    rows = sorted(spot)
    fresh = encoder.forward(np.stack([spot[r] for r in rows])).float().cpu()
    if fresh.shape[1] != feats.shape[1]:
        raise CacheMismatch(f"holds {feats.shape[1]}-d features; the encoder gives {fresh.shape[1]}-d")
    distance = (feats[rows] - fresh).norm(dim=1) / fresh.norm(dim=1).clamp_min(1e-6)
    if not bool(torch.isfinite(feats[rows]).all()) or float(distance.max()) > SPOT_CHECK_TOLERANCE:
        raise CacheMismatch("its features differ from the encoder's on the rows checked")
    return feats
