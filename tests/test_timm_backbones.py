"""--backbone timm:NAME and --backbone-weights: any timm model as the encoder, its CIFAR stem where one
applies, a strict pretrained start, and checkpoints that gcl-eval scores and exports."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from test_export import rebuild
from test_train_data import CIFAR_TEST, make_shards
from test_train_run import _recipe

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.backbones import build_backbone, check_backbone, load_backbone_weights  # noqa: E402
from gcl.checkpoint import load_backbone, preprocess  # noqa: E402
from gcl.errors import UserError  # noqa: E402
from gcl.eval.cli import main as gcl_eval  # noqa: E402
from gcl.train.cli import main as gcl_train  # noqa: E402


def test_any_timm_model_by_name_with_its_pooled_features():
    net, dim = build_backbone("timm:convnext_atto", cifar_stem=False)
    assert dim == 320 == net.num_features and net(torch.randn(2, 3, 32, 32)).shape == (2, 320)
    vit, dim = build_backbone("timm:vit_tiny_patch16_224", cifar_stem=True, resolution=32)
    assert dim == 192 and vit.patch_embed.grid_size == (8, 8)  # 4 px patches at 32 px: 64 tokens


@pytest.mark.parametrize("name", ["timm:resnet10t", "timm:resnet18"])  # deep stem / plain 7x7 stem
def test_cifar_stem_keeps_32px_maps_in_timm_resnets(name):
    small, _ = build_backbone(name, cifar_stem=True)
    large, _ = build_backbone(name, cifar_stem=False)
    x = torch.randn(1, 3, 32, 32)
    small.eval(), large.eval()
    assert small.forward_features(x).shape[-1] == 4 and large.forward_features(x).shape[-1] == 1
    assert isinstance(small.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("name,cifar_stem,message", [
    ("timm:convnext_atto", True, "the CIFAR stem applies to timm ResNets and ViTs, not to timm:convnext_atto: "
                                 "add --no-cifar-stem"),
    ("timm:no_such_net", False, "timm has no model 'no_such_net'"),
    ("resnet21", True, "unknown backbone 'resnet21'"),
])
def test_unusable_backbones_are_one_line(name, cifar_stem, message):
    with pytest.raises(UserError) as err:
        check_backbone(name, cifar_stem)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_backbone_weights_load_strictly_and_mismatches_are_one_line(tmp_path):
    source = timm.create_model("resnet10t", num_classes=7)  # a classifier head, as published weights have
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "r10t.safetensors")
    net, _ = build_backbone("timm:resnet10t", cifar_stem=False)
    load_backbone_weights(net, tmp_path / "r10t.safetensors")  # the head is left out, the rest fits exactly
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in net.state_dict().items())
    r18 = timm.create_model("resnet18", num_classes=0).state_dict()
    save_file({k: v.contiguous() for k, v in r18.items()}, tmp_path / "r18.safetensors")
    for name, stem, words in (("timm:resnet10t", False, "missing"),  # other layers
                              ("timm:resnet18", True, "1 of another shape (e.g. conv1.weight)")):  # 7x7 vs 3x3 stem
        other, _ = build_backbone(name, cifar_stem=stem)
        with pytest.raises(UserError) as err:
            load_backbone_weights(other, tmp_path / "r18.safetensors")
        assert "does not fit this backbone" in str(err.value) and words in str(err.value), str(err.value)
    (tmp_path / "x.ckpt").write_bytes(b"PK\x03\x04 not safetensors")
    with pytest.raises(UserError, match="is not a safetensors file"):
        load_backbone_weights(net, tmp_path / "x.ckpt")


def test_timm_run_trains_from_weights_then_scores_and_exports(tmp_path):
    start = timm.create_model("resnet10t", num_classes=0)
    start.conv1[0].stride = (1, 1)  # the CIFAR stem keeps every shape: the weights fit it
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, tmp_path / "start.safetensors")
    shards = make_shards(tmp_path / "s", n=32, per_shard=16)
    run = tmp_path / "run"
    r = CliRunner().invoke(gcl_train, ["--shards", str(shards), "--recipe", _recipe(tmp_path), "--backbone",
                                       "timm:resnet10t", "--cifar-stem", "--backbone-weights",
                                       str(tmp_path / "start.safetensors"), "--batch-size", "8", "--epochs", "1",
                                       "--max-steps-per-epoch", "1", "--output", str(run)])
    assert r.exit_code == 0, r.output
    net, info = load_backbone(str(run / "checkpoints" / "last.ckpt"))
    assert info["backbone"] == "timm:resnet10t"
    convs = {k: v for k, v in net.state_dict().items() if v.ndim == 4}
    change = {k: float((v - start.state_dict()[k]).norm() / start.state_dict()[k].norm()) for k, v in convs.items()}
    # one step from the given start: every conv near it (another random init would be ~1.4 away), and all moved
    assert len(change) > 10 and max(change.values()) < 0.3 and min(change.values()) > 0, change
    r = CliRunner().invoke(gcl_eval, ["knn", "--ckpt", str(run), "--eval-train", str(CIFAR_TEST), "--eval-test",
                                      str(CIFAR_TEST), "--eval-limit", "40", "--no-baselines", "--no-cache"])
    assert r.exit_code == 0 and "top-1" in r.output, r.output
    r = CliRunner().invoke(gcl_eval, ["export", str(run), "--output", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert cfg["library"] == "timm" and cfg["model_name"] == "resnet10t" and cfg["feature_dim"] == 512
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8).numpy()
    with torch.no_grad():
        x = preprocess(images, info)
        assert torch.allclose(rebuild(tmp_path / "exp")(x), net(x), atol=1e-5, rtol=0)
