"""gcl-eval export: every backbone gcl trains, rebuilt by torchvision / timm (or gcl for its own CIFAR
ResNets) from model.safetensors + config.json, loads strictly and gives gcl's own features."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from safetensors.torch import load_file

from gcl.backbones import BACKBONES
from gcl.checkpoint import load_backbone, preprocess
from gcl.eval.cli import main as gcl_eval
from gcl.train.config import AugConfig, TrainConfig
from gcl.train.methods import get_method

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_run(folder: Path, backbone: str, cifar_stem: bool = True, resolution: int = 32, seed: int = 0) -> Path:
    """A run folder with checkpoints/last.ckpt written through the real checkpoint contract (the method's
    LightningModule and its on_save_checkpoint), with every float weight and BatchNorm statistic
    randomised so a rebuilt module only matches when every tensor landed in its place."""
    torch.manual_seed(seed)
    cfg = TrainConfig(backbone=backbone, cifar_stem=cifar_stem, shards=["x.tar"], epochs=1,
                      augmentations=[AugConfig(crop_size=resolution)], method_kwargs={"proj_output_dim": 16})
    model = get_method("simclr")(cfg.to_dict(), steps_per_epoch=1)
    with torch.no_grad():
        for name, t in model.backbone.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.5 + 0.75 if name.endswith("running_var") else torch.randn_like(t) * 0.05)
    ckpt = {"state_dict": model.state_dict(), "epoch": 0, "global_step": 1}
    model.on_save_checkpoint(ckpt)
    (folder / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, folder / "checkpoints" / "last.ckpt")
    return folder


def rebuild(folder: Path) -> nn.Module:
    """The rebuild docs/python-api.md shows, for each library config.json can name."""
    cfg = json.loads((folder / "config.json").read_text())
    if cfg["library"] == "torchvision":
        import torchvision

        net = getattr(torchvision.models, cfg["model_name"])()
        if cfg["cifar_stem"]:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
    elif cfg["library"] == "timm":
        import timm

        net = timm.create_model(cfg["model_name"], **cfg["timm_kwargs"])
        if cfg["cifar_stem"] and hasattr(net, "maxpool"):
            if isinstance(net.conv1, nn.Conv2d):
                net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
            else:
                net.conv1[0].stride = (1, 1)
            net.maxpool = nn.Identity()
    else:
        from gcl.backbones import build_backbone

        net, _ = build_backbone(cfg["arch"], cfg["cifar_stem"], cfg["resolution"])
    net.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    return net.eval()


# the two largest take ~20 s each on 2 cores; their paths are resnet18's and vit_tiny's
BIG = {"resnet50", "vit_small"}
CASES = [pytest.param(name, True, marks=[pytest.mark.slow] if name in BIG else []) for name in BACKBONES] + [("resnet18", False), ("resnet18_w0.5", False), ("vit_tiny", False),
                                                 ("timm:resnet10t", True), ("timm:resnet18", True),
                                                 ("timm:resnet10t", False)]


@pytest.mark.parametrize("backbone,cifar_stem", CASES)
def test_export_rebuilds_with_the_library_and_gives_gcls_features(tmp_path, backbone, cifar_stem):
    run = make_run(tmp_path / "runs" / "my-run", backbone, cifar_stem)
    out = tmp_path / "exported"
    r = CliRunner().invoke(gcl_eval, ["export", str(run), "--output", str(out)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    expected_lib = "torchvision" if backbone in ("resnet18", "resnet50") else (
        "timm" if backbone.startswith(("timm:", "vit_")) else "gcl")
    assert cfg["library"] == expected_lib and cfg["arch"] == backbone and cfg["cifar_stem"] is cifar_stem
    assert cfg["source_run"] == "my-run" and cfg["checkpoint"] == "checkpoints/last.ckpt"
    assert str(tmp_path) not in (out / "config.json").read_text()  # no absolute path
    import hashlib

    assert cfg["checkpoint_sha256"] == hashlib.sha256((run / "checkpoints" / "last.ckpt").read_bytes()).hexdigest()
    assert not any(k.startswith(("backbone.", "projector.")) for k in load_file(out / "model.safetensors"))

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    gcl_net, info = load_backbone(str(run / "checkpoints" / "last.ckpt"))
    with torch.no_grad():
        ours = gcl_net(preprocess(images, info))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        theirs = rebuild(out)((x - mean) / std)
    assert theirs.shape == (3, cfg["feature_dim"]) and ours.std() > 0
    assert torch.allclose(theirs, ours, atol=1e-5, rtol=0), (theirs - ours).abs().max()


def test_export_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    run = make_run(tmp_path / "run", "resnet20")
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    r = CliRunner().invoke(gcl_eval, ["export", str(run), "--output", str(foreign)])
    assert r.exit_code != 0 and "holds other files" in r.output and len(r.output.strip().splitlines()) == 1
    assert (foreign / "thesis.tex").read_text() == "keep me" and not (foreign / "config.json").exists()
    out = tmp_path / "exp"
    for _ in range(2):  # a second export into its own folder replaces it
        assert CliRunner().invoke(gcl_eval, ["export", str(run), "--output", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    r = CliRunner().invoke(gcl_eval, ["export", str(tmp_path / "run" / "checkpoints"), "--output", str(tmp_path / "e2")])
    assert r.exit_code == 0, r.output  # a folder holding the .ckpt: its newest checkpoint
