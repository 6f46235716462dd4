"""Shard -> view-pair loader: counts, pairing from real shards, errors, plain-input path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gcl.synth.manifest import write_manifest
from gcl.synth.shards import Sample, ShardWriter, encode_image, shard_name

os.environ["HF_HUB_OFFLINE"] = "1"
CIFAR_TEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_test.npz"


def make_shards(folder: Path, n: int = 96, per_shard: int = 24, views: int = 2, res: int = 32, labelled: bool = True,
                name: str = "fix", corrupt: int = 0) -> Path:
    """Real CIFAR images as orig; generated views = the image plus seeded pixel noise (a stand-in
    generator with the exact shard layout gcl-synth writes). Returns the manifest path."""
    with np.load(CIFAR_TEST) as z:
        images, labels = z["images"][:n], z["labels"][:n]
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    rng = np.random.default_rng(0)
    for s in range(0, n, per_shard):
        path = folder / shard_name(name, s // per_shard)
        w = ShardWriter(path)
        for i in range(s, min(n, s + per_shard)):
            img = images[i]
            imgs = {"orig": encode_image(img, "jpg", 95)}
            for v in range(views):
                noisy = np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
                imgs[f"view{v}"] = encode_image(noisy, "jpg", 95)
            if i < corrupt:
                imgs["orig"] = b"not a jpeg"
            meta = {"views": [{"view": v, "seed": v, "ops": [{"op": "noise", "strength": 0.1}]} for v in range(views)]}
            w.write(Sample(f"img{i:05d}", imgs, meta, int(labels[i]) if labelled else None))
        size, sha = w.close()
        shards.append({"url": path.name, "samples": w.count, "bytes": size, "sha256": sha})
    manifest = {"shards": shards, "views": views, "resolution": res, "image_format": "jpg",
                "class_names": [str(i) for i in range(10)] if labelled else None, "labelled": labelled}
    return write_manifest(manifest, folder / f"{name}.manifest.json", folder)
