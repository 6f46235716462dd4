"""Benchmark (not a test): is a 5k-image, 20-epoch SimCLR run <= 10 minutes on the CPU it runs on?

    .venv/bin/python bench/train_speed.py [--backbone resnet20] [--steps 6] [--images 5000]
    .venv/bin/python bench/train_speed.py --compare resnet18,resnet20,resnet32   # step-only table

Runs gcl-train's real pipeline (train/run.py: loader workers decode, batched augmentation and the
step in the training process) on the first N CIFAR-10 train images (a temporary npz, --input),
for 2 short epochs of --steps steps, and times it with a callback: per-epoch start-up (workers)
and per-step wall time (data wait included). The projection for E epochs is
E x (start-up + steps_per_epoch x step time); online evaluation is not included.
Also reports the loader alone (samples/s) and the batched augmentation alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from gcl.train.augment import augment_views
from gcl.train.methods import get_method
from gcl.train.config import load_config
from gcl.train.data import build_train_loader
from gcl.train.run import train

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_train.npz"
TARGET_MIN = 10.0  # the CPU studies' budget: one 5k x 20-epoch SimCLR run in <= 10 minutes on 2 cores


class StepTimer(Callback):
    def __init__(self):
        self.startup, self.steps, self._t = [], [], None

    def on_train_epoch_start(self, trainer, pl_module):
        self._t, self._first = time.perf_counter(), True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._first:
            self.startup.append(time.perf_counter() - self._t)
            self._first = False
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(time.perf_counter() - self._t)
        self._t = time.perf_counter()


def loader_rate(cfg, batches: int) -> float:
    loader, _ = build_train_loader(cfg, world=1)
    loader.steps = min(loader.steps, batches + 1)
    it = iter(loader)
    next(it)  # worker start-up excluded (counted in the run's start-up above)
    t, n = time.perf_counter(), 0
    for b in it:
        n += len(b["key"])
    return n / (time.perf_counter() - t)


def augment_rate(cfg, batch: int) -> float:
    x = [torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8) for _ in range(2)]
    gen = torch.Generator().manual_seed(0)
    augment_views(x, None, cfg.augmentations, None, gen)
    t = time.perf_counter()
    for _ in range(3):
        augment_views(x, None, cfg.augmentations, None, gen)
    return 3 * batch / (time.perf_counter() - t)


def step_table(names: list[str], recipe: str, batch: int, steps: int) -> None:
    """SimCLR step (2 views, batch, 32 px, fp32) per backbone on fixed random inputs: the model's
    cost alone, no data or augmentation; projected minutes for 5k x 20 epochs from it."""
    for name in names:
        cfg = load_config(recipe, {"input": "x", "gen_prob": 0.0, "backbone": name, "batch_size": batch})
        torch.manual_seed(0)
        model = get_method("simclr")(cfg.to_dict(), steps_per_epoch=100)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = [torch.rand(batch, 3, 32, 32) for _ in range(2)]

        def one():
            out = model.views_loss([model.normalize(v) for v in x], {})
            opt.zero_grad()
            out["loss"].backward()
            opt.step()

        one()
        t = time.perf_counter()
        for _ in range(steps):
            one()
        sps = steps * batch / (time.perf_counter() - t)
        params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        print(f"{name:15s} {params:6.2f}M params  {sps:8.1f} samples/s  -> {5000 * 20 / sps / 60:6.1f} min for "
              f"5k x 20 epochs (step only; load avg {os.getloadavg()[0]:.1f})", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet20")
    ap.add_argument("--recipe", default="cifar10/simclr")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=20, help="projected run length")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per bench epoch (2 bench epochs)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--compare", help="comma-separated backbones: print the step-only table and stop")
    args = ap.parse_args()
    if args.compare:
        step_table(args.compare.split(","), args.recipe, args.batch_size, max(2, args.steps // 2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        with np.load(CIFAR) as z:
            np.savez(Path(tmp) / "c5k.npz", images=z["images"][:args.images], labels=z["labels"][:args.images])
        opts = {"input": str(Path(tmp) / "c5k.npz"), "gen_prob": 0.0, "backbone": args.backbone, "epochs": 2,
                "batch_size": args.batch_size, "max_steps_per_epoch": args.steps, "output": str(Path(tmp) / "run"),
                "ckpt_every_steps": 0}
        cfg = load_config(args.recipe, opts)
        timer = StepTimer()
        t0 = time.perf_counter()
        train(cfg, resume=False, extra_callbacks=(timer,))
        wall = time.perf_counter() - t0
        step = statistics.median(timer.steps[1:])  # the very first step warms kernels up
        startup = statistics.median(timer.startup)
        steps_per_epoch = args.images // args.batch_size
        minutes = args.epochs * (startup + steps_per_epoch * step) / 60
        print(f"backbone {args.backbone}, recipe {args.recipe}, batch {args.batch_size}, {args.images} images, "
              f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores (load avg {os.getloadavg()[0]:.1f})")
        print(f"training step     : {args.batch_size / step:8.1f} samples/s  ({step:.2f} s/step, median of "
              f"{len(timer.steps) - 1}; augmentation + forward/backward + data wait)")
        print(f"epoch start-up    : {startup:8.2f} s  (loader workers)")
        print(f"projected {args.epochs} epochs: {minutes:8.1f} min  ({steps_per_epoch} steps/epoch; "
              f"ratio to the {TARGET_MIN:.0f}-min target {minutes / TARGET_MIN:.2f}, <= 1 meets it)")
        print(f"bench run wall    : {wall:8.1f} s  (2 epochs x {args.steps} steps, with model build and checkpoints)")
        print(f"loader only       : {loader_rate(cfg, 8):8.1f} samples/s  (decode to uint8, no augmentation)")
        print(f"augmentation only : {augment_rate(cfg, args.batch_size):8.1f} samples/s  (2 views, batched, CPU)")


if __name__ == "__main__":
    main()
