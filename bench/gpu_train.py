"""GPU check 3: gcl-train (ResNet-18 SimCLR, bf16-mixed) on CIFAR-size shards: samples/s and data wait.

    python bench/gpu_train.py --shards MANIFEST --json out.json [--seconds 60]

Runs gcl-train's own pipeline (train/run.py: loader workers decode, the batched augmentation and
the step run on the GPU) with a timer callback. Per step: `wait` is the time from the end of one
step to the start of the next (the loader's batch not ready yet), `step` from its start to its end,
synchronised with the GPU so that queued kernels are not counted as waiting. The first batch of
each epoch (worker start-up) is reported apart; steps of the first epoch warm up and are left out
of the steady-state figures. The run stops after --seconds (trainer.should_stop) or --epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from gcl.train.config import default_workers, load_config
from gcl.train.run import train


class DataWaitTimer(Callback):
    def __init__(self, seconds: float):
        self.seconds, self.t_start = seconds, None
        self.startup, self.rows, self._end, self._epoch_t = [], [], None, None

    def _now(self, trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_t, self._end = self._now(trainer), None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = self._now(trainer)
        if self.t_start is None:
            self.t_start = now
        if self._end is None:
            self.startup.append(now - self._epoch_t)
            self._wait = None
        else:
            self._wait = now - self._end
        self._begin = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = self._now(trainer)
        if self._wait is not None:
            self.rows.append((trainer.current_epoch, self._wait, now - self._begin, len(batch["key"])))
        self._end = now
        if now - self.t_start > self.seconds:
            trainer.should_stop = True  # the public way for a callback to end fit()


def summarise(timer: DataWaitTimer) -> dict:
    steady = [r for r in timer.rows if r[0] > 0] or timer.rows  # first epoch warms up (kernels, allocator)
    wait, step = sum(r[1] for r in steady), sum(r[2] for r in steady)
    samples = sum(r[3] for r in steady)
    out = {"timed_steps": len(steady), "samples_per_s": round(samples / (wait + step), 1) if steady else None,
           "data_wait_share": round(wait / (wait + step), 4) if steady else None,
           "median_step_s": round(statistics.median(r[2] for r in steady), 4) if steady else None,
           "median_wait_s": round(statistics.median(r[1] for r in steady), 4) if steady else None,
           "epoch_startup_s": [round(s, 2) for s in timer.startup]}
    # with each epoch's first batch (loader start-up) counted as waiting
    all_wait = sum(r[1] for r in timer.rows) + sum(timer.startup)
    all_step = sum(r[2] for r in timer.rows)
    out["data_wait_share_with_startup"] = round(all_wait / (all_wait + all_step), 4) if timer.rows else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True, help="manifest of a shard set (gpu_synth.py --keep-shards)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this much training")
    ap.add_argument("--precision", default=None, help="default: bf16-mixed on CUDA, 32-true on CPU")
    ap.add_argument("--gen-prob", type=float, default=0.5)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("cifar10/simclr", {"shards": (args.shards,), "backbone": "resnet18", "batch_size": args.batch_size,
                                             "epochs": args.epochs, "gen_prob": args.gen_prob, "precision": precision,
                                             "output": str(Path(tmp) / "run"), "ckpt_every_steps": 0})
        timer = DataWaitTimer(args.seconds)
        t0 = time.perf_counter()
        info = train(cfg, resume=False, extra_callbacks=(timer,))
        wall = time.perf_counter() - t0
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "backbone": "resnet18", "method": "simclr",
           "precision": precision, "batch": args.batch_size, "gen_prob": args.gen_prob,
           "loader_workers": default_workers(cfg), "train_samples": info["train_samples"],
           "steps_per_epoch": info["steps_per_epoch"], "steps_done": info.get("global_step"), "wall_s": round(wall, 1),
           "train_loss_last": info.get("final_metrics", {}).get("train_loss"), **summarise(timer)}
    Path(args.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res), flush=True)
    if not timer.rows:
        sys.exit("no timed steps: the run ended before a second step")


if __name__ == "__main__":
    main()
