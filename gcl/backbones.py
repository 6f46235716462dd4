"""Backbones (torchvision ResNets, small CIFAR ResNets, a timm ViT): built the same way by gcl-train
and by gcl-eval (through gcl.checkpoint), so a checkpoint's state dict always fits its module.
"""

from __future__ import annotations

import torch.nn as nn

from gcl.cifar_resnet import CIFAR_DEPTHS, NARROW_RESNET18, cifar_resnet, narrow_resnet18

# resnet20/32/56: He et al.'s CIFAR ResNets (64-d features), the fast choices on a few CPU cores;
# resnet18_w0.5 / _w0.25: ResNet-18 with channels halved / quartered (256 / 128-d features).
BACKBONES = ("resnet18", "resnet18_w0.5", "resnet18_w0.25", "resnet20", "resnet32", "resnet56",
             "resnet50", "vit_tiny", "vit_small")


def build_backbone(name: str, cifar_stem: bool, resolution: int | None = None) -> tuple[nn.Module, int]:
    """Return (module mapping (B,3,H,W) normalized floats -> (B, feat_dim), feat_dim).

    cifar_stem: for 32-64 px inputs. ResNets get a 3x3 stride-1 first conv and no max-pool (as in
    solo-learn / SimCLR's CIFAR variant), otherwise 32 px images shrink to 1x1 after the stem.
    ViTs get 4 px patches instead of 16 px so a 32 px image still has 64 tokens.
    """
    if name in CIFAR_DEPTHS:
        net = cifar_resnet(name)  # designed for 32 px: its stem is always the small one
        return net, net.feat_dim
    if name in NARROW_RESNET18:
        net = narrow_resnet18(name, small_stem=cifar_stem)
        return net, net.feat_dim
    if name in ("resnet18", "resnet50"):
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        feat_dim = net.fc.in_features
        net.fc = nn.Identity()  # features are the pooled 512/2048-d vector
        return net, feat_dim
    if name in ("vit_tiny", "vit_small"):
        import timm

        img = resolution or (32 if cifar_stem else 224)
        patch = 4 if cifar_stem else 16
        # dynamic_img_size: eval at a different resolution interpolates position embeddings
        # instead of failing; num_classes=0 returns the pooled (CLS) token.
        net = timm.create_model(f"{name}_patch16_224", pretrained=False, num_classes=0, img_size=img,
                                patch_size=patch, dynamic_img_size=True)
        return net, net.num_features
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
