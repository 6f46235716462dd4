"""Exact runs: the data order is a function of (seed, epoch, rank) only, and a run killed with
SIGKILL in the middle of an epoch and resumed ends with the uninterrupted run's weights, having
trained on exactly the same batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_train_data import _cfg, make_shards

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.data import build_train_loader  # noqa: E402
from gcl.train.epochs import LoaderPosition  # noqa: E402


def _epoch(loader, epoch: int, rank: int = 0, world: int = 1) -> tuple[list[str], torch.Tensor]:
    loader.start_epoch(LoaderPosition(epoch=epoch, rank=rank, world=world))
    keys, pixels = [], []
    for b in loader:
        keys += b["key"]
        pixels.append(torch.stack(b["views"], 1))
    return keys, torch.cat(pixels)


@pytest.mark.parametrize("world", [1, 2])
def test_data_order_does_not_depend_on_the_worker_count(tmp_path, world):
    m = make_shards(tmp_path / "s", n=120, per_shard=24, corrupt=2)  # 5 shards, 2 corrupt families
    runs = {nw: [_epoch(build_train_loader(_cfg(shards=[str(m)], num_workers=nw), world)[0], e, rank, world)
                 for e in (0, 1) for rank in range(world)]
            for nw in (0, 1, 2, 3)}
    ref = runs[0]
    assert len(ref[0][0]) == 8 * (120 // (8 * world))  # steps from the manifest count; a short pass wraps
    for nw, got in runs.items():
        for (keys, pix), (ref_keys, ref_pix) in zip(got, ref):
            assert keys == ref_keys, f"{nw} workers changed the order"
            assert torch.equal(pix, ref_pix), f"{nw} workers changed the chosen members"
    assert ref[0][0] != ref[world][0]  # another epoch is another order


def _train_cmd(manifest: Path, out: Path, recipe: Path) -> list[str]:
    return [str(Path(sys.executable).with_name("gcl-train")), "--shards", str(manifest), "--method", "simclr",
            "--backbone", "resnet20", "--batch-size", "8", "--gen-prob", "0.5", "--epochs", "2",
            "--output", str(out), "--recipe", str(recipe), "--accelerator", "cpu", "--record-keys"]


def _steps(out: Path) -> dict[int, list[str]]:
    """step -> the keys trained at that step, from the --record-keys files."""
    steps: dict[int, list[str]] = {}
    for path in sorted((out / "keys").glob("epoch*-rank0.txt")):
        for line in path.read_text().splitlines():
            step, key = line.split(" ")
            steps.setdefault(int(step), []).append(key)
    return steps


def _weights(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    m = make_shards(tmp_path / "s", n=128, per_shard=32)  # 16 steps per epoch at batch 8
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"augmentations": {"crop_size": 32}, "num_workers": 2, "shuffle_buffer": 50,
                                      "ckpt_every_steps": 1, "optimizer": {"name": "sgd", "lr": 0.1},
                                      "method_kwargs": {"proj_hidden_dim": 64, "proj_output_dim": 32}}))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run(_train_cmd(m, whole, recipe), capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(_train_cmd(m, cut, recipe), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    keys = cut / "keys" / "epoch0001-rank0.txt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        # kill once epoch 1 (steps 17-32) has trained 4 batches: mid-epoch, checkpoint every step
        if keys.exists() and len(keys.read_text().splitlines()) >= 4 * 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-epoch"
    killed_at = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 16 < killed_at < 32, killed_at  # the checkpoint it resumes from is in the middle of epoch 1

    resumed = subprocess.run(_train_cmd(m, cut, recipe) + ["--resume"], capture_output=True, text=True,
                             timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _steps(cut) == _steps(whole) and sorted(_steps(whole)) == list(range(1, 33))
    a, b = _weights(whole), _weights(cut)
    assert a.keys() == b.keys()
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff == 0.0, f"resumed weights differ from the uninterrupted run by {diff}"


def test_averaged_weights_checkpoint_is_the_mean_of_the_last_epochs_and_survives_resume(tmp_path):
    """average_last_epochs: 2 of 3 -> avg.ckpt = mean of the end-of-epoch weights of epochs 1 and 2,
    readable by gcl-eval like last.ckpt; a run stopped after epoch 1 and resumed averages the same."""
    from lightning.pytorch.callbacks import Callback

    from gcl.checkpoint import load_backbone
    from gcl.train.config import load_config
    from gcl.train.run import train

    m = make_shards(tmp_path / "s", n=32, per_shard=16)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"augmentations": {"crop_size": 32}, "num_workers": 0, "shuffle_buffer": 20,
                                      "average_last_epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1},
                                      "method_kwargs": {"proj_hidden_dim": 32, "proj_output_dim": 16}}))

    class EpochEnds(Callback):
        def __init__(self, stop_after=None):
            self.ends, self.stop_after = [], stop_after

        def on_train_epoch_end(self, trainer, pl_module):
            self.ends.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})
            if trainer.current_epoch == self.stop_after:
                trainer.should_stop = True  # as if the sitting ended after this epoch

    def cfg(out):
        return load_config(str(recipe), {"shards": (str(m),), "method": "simclr", "backbone": "resnet20",
                                         "batch_size": 8, "gen_prob": 0.5, "epochs": 3, "output": str(out)})

    whole = EpochEnds()
    train(cfg(tmp_path / "whole"), resume=False, extra_callbacks=(whole,))
    avg = torch.load(tmp_path / "whole" / "checkpoints" / "avg.ckpt", map_location="cpu", weights_only=True)
    assert avg["averaged_epochs"] == 2 and len(whole.ends) == 3
    for k, v in avg["state_dict"].items():
        if v.is_floating_point():
            expected = (whole.ends[1][k].double() + whole.ends[2][k].double()) / 2
            assert torch.allclose(v.double(), expected, atol=1e-6), k
            assert not torch.equal(v, whole.ends[2][k]) or torch.equal(whole.ends[1][k], whole.ends[2][k]), k
    net, info = load_backbone(str(tmp_path / "whole" / "checkpoints" / "avg.ckpt"))
    assert info["backbone"] == "resnet20" and info["resolution"] == 32

    train(cfg(tmp_path / "cut"), resume=False, extra_callbacks=(EpochEnds(stop_after=1),))
    assert not (tmp_path / "cut" / "checkpoints" / "avg.ckpt").exists()  # stopped before the last epoch
    train(cfg(tmp_path / "cut"), resume=True)
    resumed = torch.load(tmp_path / "cut" / "checkpoints" / "avg.ckpt", map_location="cpu", weights_only=True)
    assert resumed["averaged_epochs"] == 2
    for k, v in avg["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
