"""Real data: gcl-synth with the real TAEF2 on CIFAR-10 images, then one gcl-train epoch."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from test_train_data import CIFAR_TEST

os.environ["HF_HUB_OFFLINE"] = "1"
TAEF2 = Path(__file__).resolve().parent.parent.parent / "shared" / "models" / "taef2"


@pytest.mark.slow
def test_taef2_shards_one_epoch_logs_loss_and_knn(tmp_path):
    with np.load(CIFAR_TEST) as z:
        np.savez(tmp_path / "c.npz", images=z["images"][:128], labels=z["labels"][:128], class_names=z["class_names"])
    synth = Path(sys.executable).with_name("gcl-synth")
    proc = subprocess.run([str(synth), "run", "--generator", "taesd", "--model", str(TAEF2), "--input", str(tmp_path / "c.npz"),
                           "--output", str(tmp_path / "shards"), "--views", "2", "--resolution", "64", "--shard-size", "64"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = next((tmp_path / "shards").glob("*.manifest.json"))
    from gcl.train.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["--shards", str(manifest), "--method", "simclr", "--backbone", "resnet18", "--epochs", "1",
                                  "--batch-size", "32", "--gen-prob", "0.5", "--output", str(out), "--recipe", "cifar10/simclr",
                                  "--no-cifar-stem", "--num-workers", "1", "--eval-train", str(CIFAR_TEST),
                                  "--eval-test", str(CIFAR_TEST), "--eval-limit", "128", "--verify"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    losses = [float(x["train_loss"]) for x in rows if x["train_loss"]]
    knn = [float(x["test_knn_top1"]) for x in rows if x["test_knn_top1"]]
    assert losses and all(np.isfinite(losses)) and knn and 0 < knn[-1] <= 100
    info = json.loads((out / "run.json").read_text())
    assert info["num_views_in_shards"] == 2 and info["train_samples"] == 128 and info["global_step"] == 4
