"""gcl-train end to end on small fixture shards: logs, checkpoints, resume, errors, DDP split."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from test_train_data import CIFAR_TEST, make_shards

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.cli import main  # noqa: E402

# Small but real: ResNet-18 with the ImageNet stem on 32 px crops is cheap on 2 CPU cores.
FAST = {"cifar_stem": False, "method_kwargs": {"proj_hidden_dim": 128, "proj_output_dim": 64},
        "augmentations": {"crop_size": 32}, "num_workers": 1, "shuffle_buffer": 50, "eval_limit": 64,
        "optimizer": {"name": "sgd", "lr": 0.1}}


def _recipe(tmp_path, **extra) -> str:
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump({**FAST, **extra}))
    return str(path)


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _val_split(tmp_path) -> str:
    """64 CIFAR-10 train images: held out of the fixture shards (made from test images)."""
    import numpy as np

    with np.load(CIFAR_TEST.with_name("cifar10_train.npz")) as z:
        np.savez(tmp_path / "val.npz", images=z["images"][-64:], labels=z["labels"][-64:])
    return str(tmp_path / "val.npz")


def test_short_run_logs_and_checkpoints(tmp_path):
    m = make_shards(tmp_path / "s", n=64, per_shard=16)
    out = tmp_path / "run"
    args = ["--shards", str(m), "--method", "simclr", "--backbone", "resnet18", "--batch-size", "16",
            "--gen-prob", "0.5", "--output", str(out), "--recipe", _recipe(tmp_path),
            "--eval-train", str(CIFAR_TEST), "--eval-val", _val_split(tmp_path), "--eval-test", str(CIFAR_TEST)]
    r = CliRunner().invoke(main, args + ["--epochs", "1"])
    assert r.exit_code == 0, r.output
    rows = _rows(out)
    assert any(row["train_loss"] for row in rows) and any(row["test_knn_top1"] for row in rows)
    knn = [float(row["test_knn_top1"]) for row in rows if row["test_knn_top1"]]
    val = [float(row["val_knn_top1"]) for row in rows if row["val_knn_top1"]]
    assert 0.0 <= knn[0] <= 100.0 and 0.0 <= val[0] <= 100.0 and any(row["test_linear_top1"] for row in rows)
    info = json.loads((out / "run.json").read_text())
    assert info["global_step"] == 4 and info["gen_prob"] == 0.5 and info["method"] == "simclr"
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "checkpoints" / "best.ckpt").exists()

    from gcl.checkpoint import load_backbone, preprocess
    import numpy as np

    net, meta = load_backbone(str(out / "checkpoints" / "last.ckpt"))
    assert meta["global_step"] == 4 and meta["resolution"] == 32 and meta["gen_prob"] == 0.5
    assert net(preprocess(np.zeros((2, 32, 32, 3), np.uint8), meta)).shape == (2, 512)

    r = CliRunner().invoke(main, args + ["--epochs", "1"])  # same output without --resume: refused
    assert r.exit_code != 0 and "--resume" in r.output
    # more epochs change the run's schedule: refused (tests/test_train_resume.py covers resuming)
    r = CliRunner().invoke(main, args + ["--epochs", "2", "--resume"])
    assert r.exit_code == 1 and "--epochs 2 (the run's: 1)" in r.output
    assert json.loads((out / "run.json").read_text())["global_step"] == 4
    from gcl.eval.features import resolve_checkpoint

    assert resolve_checkpoint(out).name == "last.ckpt"  # gcl-eval reports the last state by default
    assert resolve_checkpoint(out, which="best").name == "best.ckpt"


def test_best_checkpoint_only_from_validation(tmp_path):
    m = make_shards(tmp_path / "s", n=32, per_shard=16)
    base = ["--shards", str(m), "--batch-size", "16", "--gen-prob", "0.5", "--recipe", _recipe(tmp_path),
            "--backbone", "resnet20", "--epochs", "1", "--eval-train", str(CIFAR_TEST)]
    r = CliRunner().invoke(main, base + ["--eval-test", str(CIFAR_TEST), "--output", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "a" / "checkpoints" / "best.ckpt").exists()  # test queries never select
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").exists()
    val = _val_split(tmp_path)
    for extra, msg in ((["--eval-val", val, "--eval-test", val], "must not see the test set"),
                       (["--eval-val", str(CIFAR_TEST)], "every query would find itself"),
                       (["--eval-val", str(m)], "both training data and an evaluation")):
        r = CliRunner().invoke(main, base + extra + ["--output", str(tmp_path / "b")])
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("bad,message", [
    ({"learning_rate": 0.1}, "unknown key(s) learning_rate"),
    ({"optimizer": {"name": "sgd", "lrr": 1}}, "unknown key(s) lrr"),
])
def test_recipe_unknown_keys_are_one_line_errors(tmp_path, bad, message):
    m = make_shards(tmp_path / "s", n=16, per_shard=16)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    r = CliRunner().invoke(main, ["--shards", str(m), "--recipe", str(path), "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_bad_input_messages(tmp_path):
    m = make_shards(tmp_path / "s", n=16, per_shard=16, views=0)
    r = CliRunner().invoke(main, ["--shards", str(m), "--gen-prob", "0.5", "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and "K=0" in r.output
    r = CliRunner().invoke(main, ["--shards", str(tmp_path / "missing.json"), "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and "manifest not found" in r.output
    r = CliRunner().invoke(main, ["--shards", str(m), "--recipe", "cifar10/nope", "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and "cifar10/simclr" in r.output


def test_bundled_recipes_load():
    from gcl.train.config import RECIPES_DIR, load_config

    names = sorted(p.stem for p in (RECIPES_DIR / "cifar10").glob("*.yaml"))
    assert {"simclr", "byol", "mocov2plus", "barlow_twins", "vicreg", "simsiam", "supcon"} <= set(names)
    for n in names:
        cfg = load_config(f"cifar10/{n}", {"shards": ("x.json",), "opt_lr": 0.5})
        assert cfg.method == n.removesuffix("_study") and cfg.optimizer.lr == 0.5  # CLI value overrides the recipe
    assert load_config("recipes/cifar10/byol.yaml", {"shards": ("x",)}).augmentations[1].solarization_prob == 0.2


def test_ddp_two_gloo_ranks_see_every_sample_once(tmp_path):
    m = make_shards(tmp_path / "s", n=64, per_shard=16)
    out = tmp_path / "ddp"
    exe = Path(sys.executable).with_name("gcl-train")
    cmd = [str(exe), "--shards", str(m), "--method", "simclr", "--batch-size", "8", "--gen-prob", "0.5",
           "--epochs", "2", "--output", str(out), "--recipe", _recipe(tmp_path), "--devices", "2",
           "--accelerator", "cpu", "--record-keys"]
    env = dict(os.environ, PL_DISABLE_FORK="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = sorted(f"img{i:05d}" for i in range(64))
    for epoch in (0, 1):
        per_rank = [(out / "keys" / f"epoch{epoch:04d}-rank{r}.txt").read_text().split()[1::2] for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) == 32  # same steps on both ranks
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == expected
    assert json.loads((out / "run.json").read_text())["global_step"] == 8
    # no eval sets, so no validation step: Lightning's "validation_step but no val_dataloader" never shows
    assert "validation_step" not in proc.stdout + proc.stderr


def test_cli_says_what_it_trains_and_hides_lightning_noise(tmp_path):
    """A run on a shard folder without a manifest: it says where it writes and that nothing was
    checked, gives one summary paragraph before training, and none of Lightning's chatter."""
    m = make_shards(tmp_path / "s", n=32, per_shard=16)
    m.unlink()  # plain tars: nothing to check them against
    exe = Path(sys.executable).with_name("gcl-train")
    cmd = [str(exe), "--shards", str(tmp_path / "s"), "--backbone", "resnet20", "--batch-size", "16", "--epochs", "2",
           "--num-workers", "1", "--output", str(tmp_path / "run"), "--eval-train", str(CIFAR_TEST),
           "--eval-test", str(CIFAR_TEST), "--eval-limit", "32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    lines = text.splitlines()
    assert lines[0] == f"training in {tmp_path / 'run'} (run.json, metrics.csv, checkpoints/)"
    assert lines[1].startswith("simclr on resnet20") and "32 images" in lines[1] and "K=2" in lines[1]
    assert "2 steps per epoch x 2 epochs = 4 steps" in lines[1] and "warm-up 0.2 epochs" in lines[1]
    assert "has no manifest, so nothing was checked" in lines[2]
    for noise in ("Total FLOPs", "Tip:", "GPU available", "TPU available", "logger folder", "logs directory",
                  "LeafSpec", "max_epochs=2` reached", "validation_step"):
        assert noise not in text, noise
    assert "Epoch 2/2" in text and "Epoch 0/" not in text  # epochs count from 1, as in compare and results.md
    assert str(tmp_path) not in (tmp_path / "run" / "run.json").read_text()  # no absolute path in run.json


def test_warmup_never_takes_more_than_a_tenth_of_the_epochs():
    from gcl.train.config import TrainConfig
    from gcl.train.methods import get_method

    def lr_factors(epochs, steps=10):
        cfg = TrainConfig(epochs=epochs, shards=["x.json"])  # solo-learn's 10 warm-up epochs
        sched = get_method("simclr")(cfg.to_dict(), steps).configure_optimizers()["lr_scheduler"]["scheduler"]
        return [sched.lr_lambdas[0](step) for step in range(epochs * steps)]

    short = lr_factors(2)  # warm-up capped at 0.2 epochs = 2 steps, then the cosine decay
    assert short[0] == 0.0 and short[1] == 0.5 and short[2] == 1.0 and short[-1] < 0.05
    long = lr_factors(100)  # 10% of 100 epochs: the recipe's 10 epochs stand
    assert long[99] < 1.0 and long[100] == 1.0
