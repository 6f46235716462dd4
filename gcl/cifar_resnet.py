"""Small ResNets for 32-64 px images: He et al. 2016's CIFAR ResNet-20/32/56 and a narrow ResNet-18.

CIFAR ResNets (sec. 4.2 of the paper): a 3x3 stem of 16 channels, then three stages of n
BasicBlocks at 16/32/64 channels (strides 1/2/2), global average pooling: depth 6n+2, a 64-d
feature. Shortcuts that change shape are 1x1 strided convs + BN (the paper's option B), identity
elsewhere. The narrow ResNet-18 is torchvision's layout (2 blocks in each of 4 stages at
64/128/256/512 channels) with every channel count scaled by `width`; the same block and shortcut.
"""

from __future__ import annotations

import torch
import torch.nn as nn

CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet56": 9}  # blocks per stage: depth = 6n + 2
NARROW_RESNET18 = {"resnet18_w0.5": 0.5, "resnet18_w0.25": 0.25}  # name -> channel multiplier


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """(B,3,H,W) normalized floats -> (B, feat_dim) pooled features.

    stages: (channels, blocks) per stage; the first stage keeps the resolution, later ones halve it.
    small_stem: a 3x3 stride-1 stem (32-64 px); otherwise ImageNet's 7x7 stride-2 conv + max-pool.
    """

    def __init__(self, stem_channels: int, stages: list[tuple[int, int]], small_stem: bool = True):
        super().__init__()
        if small_stem:
            stem = [nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False)]
        else:
            stem = [nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False)]
        stem += [nn.BatchNorm2d(stem_channels), nn.ReLU()]
        if not small_stem:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        layers, cin = [], stem_channels
        for i, (c, n) in enumerate(stages):
            for b in range(n):
                layers.append(BasicBlock(cin, c, 2 if i > 0 and b == 0 else 1))
                cin = c
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim = cin
        for m in self.modules():  # He init, as in the paper and torchvision's ResNets
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)


def cifar_resnet(name: str) -> SmallResNet:
    n = CIFAR_DEPTHS[name]
    return SmallResNet(16, [(16, n), (32, n), (64, n)], small_stem=True)


def narrow_resnet18(name: str, small_stem: bool) -> SmallResNet:
    c = [max(1, round(v * NARROW_RESNET18[name])) for v in (64, 128, 256, 512)]
    return SmallResNet(c[0], [(ci, 2) for ci in c], small_stem=small_stem)
