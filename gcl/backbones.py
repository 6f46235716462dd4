"""Backbones (torchvision ResNets, small CIFAR ResNets, a timm ViT) and the checkpoint contract shared with gcl-eval.

`load_backbone(ckpt)` reads a gcl-train Lightning checkpoint with `torch.load(weights_only=True)`:
everything gcl-train stores there (hyperparameters, the `gcl` info block) is plain Python types,
so no pickled classes are needed to evaluate a run.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gcl.cifar_resnet import CIFAR_DEPTHS, NARROW_RESNET18, cifar_resnet, narrow_resnet18

# resnet20/32/56: He et al.'s CIFAR ResNets (64-d features), the fast choices on a few CPU cores;
# resnet18_w0.5 / _w0.25: ResNet-18 with channels halved / quartered (256 / 128-d features).
BACKBONES = ("resnet18", "resnet18_w0.5", "resnet18_w0.25", "resnet20", "resnet32", "resnet56",
             "resnet50", "vit_tiny", "vit_small")

# Key under which gcl-train stores its plain-type run info inside the Lightning checkpoint.
CKPT_INFO_KEY = "gcl"


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


def load_backbone(ckpt_path: str, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Backbone of a gcl-train checkpoint (eval mode) and its info dict.

    info has: method, backbone, cifar_stem, resolution, mean, std, epoch, global_step, shards,
    gen_prob (and the full run config under 'config').
    """
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if CKPT_INFO_KEY not in ckpt:
        raise ValueError(f"{ckpt_path} is not a gcl-train checkpoint (no '{CKPT_INFO_KEY}' block)")
    info = dict(ckpt[CKPT_INFO_KEY])
    info["epoch"] = int(ckpt.get("epoch", info.get("epoch", 0)))
    info["global_step"] = int(ckpt.get("global_step", info.get("global_step", 0)))
    net, _ = build_backbone(info["backbone"], info["cifar_stem"], info.get("resolution"))
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    net.load_state_dict(state)
    net.eval()
    return net, info


def preprocess(images_uint8_nhwc: np.ndarray, info: dict) -> torch.Tensor:
    """uint8 (N,H,W,3) -> normalized float (N,3,R,R) as the backbone saw it in training.

    Non-square or other-sized inputs are resized (shorter side) and center-cropped to R, as the
    eval transforms of solo-learn do for a fixed input size.
    """
    x = torch.from_numpy(np.ascontiguousarray(images_uint8_nhwc)).permute(0, 3, 1, 2).float().div_(255.0)
    res = int(info["resolution"])
    h, w = x.shape[-2:]
    if (h, w) != (res, res):
        scale = res / min(h, w)
        nh, nw = max(res, round(h * scale)), max(res, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - res) // 2, (nw - res) // 2
        x = x[:, :, top:top + res, left:left + res]
    mean = torch.tensor(info["mean"], dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(info["std"], dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
