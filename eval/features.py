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
from typing import Callable

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


def data_fingerprint(images: np.ndarray, labels: np.ndarray, full: bool = False) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest() if full else h.hexdigest()[:16]


def extract(encoder: Encoder, images: np.ndarray, batch_size: int = DEFAULT_BATCH,
            progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(N, D) float32 features, computed in batches."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(encoder.forward(images[start:start + batch_size]).cpu())
        if progress:
            progress(min(start + batch_size, len(images)), len(images))
    return torch.cat(out)


def cached_features(encoder: Encoder, images: np.ndarray, labels: np.ndarray, cache_dir: str | os.PathLike | None,
                    batch_size: int = DEFAULT_BATCH, progress=None, log=None) -> tuple[torch.Tensor, bool]:
    """Features from the cache file if it is this encoder's on this data, else extracted (and
    cached when cache_dir is set). Returns (features, hit).

    A cache may come with a run folder someone sent, so a file is used only when its metadata
    names the encoder's full key (the checkpoint's sha256) and the data's full fingerprint, its
    features are (N, D) float32 with the encoder's width D, its labels are the data's, and
    SPOT_CHECK_ROWS rows picked at random now match features computed now. Anything else is
    logged, ignored and replaced.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path, fingerprint = None, data_fingerprint(images, labels, full=True)
    if cache_dir is not None:
        path = Path(cache_dir) / f"{encoder.id}-{fingerprint[:16]}.safetensors"
        if path.is_file():
            try:
                feats = _checked_cache(path, encoder, images, labels, fingerprint)
                return feats, True
            except (CacheMismatch, SafetensorError, OSError, KeyError, ValueError) as exc:
                if log:
                    log(f"ignoring feature cache {path.name}: {exc}")
    feats = extract(encoder, images, batch_size, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save_file({"features": feats.contiguous(), "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64))},
                  str(tmp), metadata={"encoder": encoder.describe, "encoder_key": encoder.key, "data": fingerprint,
                                      "n": str(len(images)), "width": str(feats.shape[1])})
        os.replace(tmp, path)
    return feats, False


# Rows recomputed to check a cache: forged features must then be right on rows chosen at load
# time, i.e. everywhere. Costs one small forward pass.
SPOT_CHECK_ROWS = 4
# Relative distance allowed between a cached and a recomputed row: other devices and kernels
# (TF32 on GPUs) move features by ~1e-3 relative; a forged row is off by order 1.
SPOT_CHECK_TOLERANCE = 2e-2


class CacheMismatch(ValueError):
    """A feature cache file that is not this encoder's features of this data."""


def _checked_cache(path: Path, encoder: Encoder, images: np.ndarray, labels: np.ndarray, fingerprint: str):
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
    if feats.dtype != torch.float32 or feats.ndim != 2 or feats.shape[0] != len(images):
        raise CacheMismatch(f"holds {tuple(feats.shape)} {feats.dtype} features for {len(images)} images")
    if not torch.equal(cached_labels, torch.from_numpy(np.asarray(labels, dtype=np.int64))):
        raise CacheMismatch("its labels differ from the data's")
    rows = sorted(random.SystemRandom().sample(range(len(images)), min(SPOT_CHECK_ROWS, len(images))))
    fresh = encoder.forward(images[rows]).float().cpu()
    if fresh.shape[1] != feats.shape[1]:
        raise CacheMismatch(f"holds {feats.shape[1]}-d features; the encoder gives {fresh.shape[1]}-d")
    distance = (feats[rows] - fresh).norm(dim=1) / fresh.norm(dim=1).clamp_min(1e-6)
    if not bool(torch.isfinite(feats[rows]).all()) or float(distance.max()) > SPOT_CHECK_TOLERANCE:
        raise CacheMismatch("its features differ from the encoder's on the rows checked")
    return feats
