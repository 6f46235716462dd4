"""Benchmark (not a test): shard loader vs ImageFolder loader vs the training step's appetite.

    .venv/bin/python bench/train_loader.py [--shards MANIFEST] [--images 4096] [--batch-size 256]

Without --shards it writes a shard set from CIFAR-10 train images (generated views stand in as
re-encoded copies: the loader's work - read, pick, decode to uint8 - is the same as for real
views) and an ImageFolder of the very same JPEG bytes. All loaders use gcl-train's own pipeline
(train/data.py) with the default worker count; the step is SimCLR + ResNet-18 at 32 px, fp32.
Handcrafted augmentation is no longer loader work (it runs batched in the training step, see
bench/train_speed.py), so the loader numbers here are read + pick + decode only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gcl.manifest import write_manifest
from gcl.shards import Sample, ShardWriter, encode_image, shard_name
from gcl.train.config import TrainConfig, default_workers, load_config
from gcl.train.data import build_train_loader
from gcl.train.methods import get_method

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_train.npz"


def write_fixture(root: Path, n: int, per_shard: int = 512, views: int = 2) -> tuple[Path, Path]:
    with np.load(CIFAR) as z:
        images, labels = z["images"][:n], z["labels"][:n]
    shards, folder = [], root / "imagefolder"
    for s in range(0, n, per_shard):
        w = ShardWriter(root / shard_name("bench", s // per_shard))
        for i in range(s, min(n, s + per_shard)):
            jpg = encode_image(images[i], "jpg", 95)
            cls_dir = folder / f"class{labels[i]}"
            cls_dir.mkdir(parents=True, exist_ok=True)
            (cls_dir / f"{i:06d}.jpg").write_bytes(jpg)
            imgs = {"orig": jpg, **{f"view{v}": encode_image(images[i], "jpg", 90 - v) for v in range(views)}}
            w.write(Sample(f"b{i:06d}", imgs, {"views": []}, int(labels[i])))
        size, sha = w.close()
        shards.append({"url": shard_name("bench", s // per_shard), "samples": w.count, "bytes": size, "sha256": sha})
    m = write_manifest({"shards": shards, "views": views, "resolution": 32, "image_format": "jpg",
                        "class_names": None, "labelled": True}, root / "bench.manifest.json", root)
    return m, folder


def loader_rate(cfg: TrainConfig, batches: int) -> tuple[float, int]:
    loader, _ = build_train_loader(cfg, world=1)
    loader.steps = min(loader.steps, batches + 1)
    it = iter(loader)
    next(it)  # workers started and first batch out: excluded (startup is paid once per epoch)
    t, n = time.perf_counter(), 0
    for b in it:
        n += len(b["key"])
    return n / (time.perf_counter() - t), loader.num_workers


def step_rate(cfg: TrainConfig, steps: int) -> float:
    model = get_method(cfg.method)(cfg.to_dict(), steps_per_epoch=100, num_classes=10, world_size=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = [torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8) for _ in range(2)]

    def one():
        out = model.views_loss([model.normalize(v) for v in x], {})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()

    one()  # warm-up (allocator, oneDNN kernels)
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * cfg.batch_size / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", help="an existing manifest (default: write a CIFAR fixture)")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved measurements per loader (median reported)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest, folder = (Path(args.shards), None) if args.shards else write_fixture(Path(tmp), args.images)
        base = load_config("cifar10/simclr", {"shards": (str(manifest),), "batch_size": args.batch_size, "gen_prob": 0.5})
        # gen-prob 0 decodes one member per family, exactly the ImageFolder loader's work
        base0 = load_config("cifar10/simclr", {"shards": (str(manifest),), "batch_size": args.batch_size, "gen_prob": 0.0})
        cfgs = {"shard": base, "shard0": base0}
        if folder is not None:
            cfgs["folder"] = load_config("cifar10/simclr", {"input": str(folder), "batch_size": args.batch_size,
                                                            "gen_prob": 0.0})
        # Interleaved rounds, median of each: load drifts on a shared machine, and a ratio of two
        # numbers taken minutes apart would measure the drift.
        rates = {k: [] for k in cfgs}
        for _ in range(args.rounds):
            for k, c in cfgs.items():
                sps, nw = loader_rate(c, args.batches)
                rates[k].append(sps)
        med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        shard_sps, shard0_sps, folder_sps = med["shard"], med["shard0"], med.get("folder")
        print(f"shard loader      : {shard_sps:8.1f} samples/s  ({nw} workers, gen-prob 0.5, 2 views, decode only)")
        print(f"shard loader p=0  : {shard0_sps:8.1f} samples/s  (one decode per family, like ImageFolder)")
        if folder_sps:
            print(f"ImageFolder loader: {folder_sps:8.1f} samples/s  (same images, same pipeline)")
        print("rounds (samples/s): " + "; ".join(f"{k} " + ", ".join(f"{x:.0f}" for x in v) for k, v in rates.items()))
        step_sps = step_rate(base, args.steps)
        print(f"training step     : {step_sps:8.1f} samples/s  (SimCLR ResNet-18 32 px, batch {args.batch_size}, "
              f"fp32, {torch.get_num_threads()} threads)")
        if folder_sps:
            print(f"ratio shard / ImageFolder loader : {shard0_sps / folder_sps:.2f} at gen-prob 0, "
                  f"{shard_sps / folder_sps:.2f} at gen-prob 0.5  (target >= 1)")
        print(f"ratio shard loader / step        : {shard_sps / step_sps:.2f}  (target >= 1.5)")
        print(f"cpu cores: {os.cpu_count()}; default workers: {default_workers(TrainConfig())}")


if __name__ == "__main__":
    main()
