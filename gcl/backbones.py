"""Backbones (torchvision ResNets, small CIFAR ResNets, timm ViTs and any timm model by name):
built the same way by gcl-train and by gcl-eval (through gcl.checkpoint), so a checkpoint's state
dict always fits its module.
"""

from __future__ import annotations

import os

import torch.nn as nn

from gcl.cifar_resnet import CIFAR_DEPTHS, NARROW_RESNET18, cifar_resnet, narrow_resnet18
from gcl.timm_backbones import GCL_VITS, TIMM_PREFIX, BackboneError, build_timm, timm_spec

# resnet20/32/56: He et al.'s CIFAR ResNets (64-d features), the fast choices on a few CPU cores;
# resnet18_w0.5 / _w0.25: ResNet-18 with channels halved / quartered (256 / 128-d features).
BACKBONES = ("resnet18", "resnet18_w0.5", "resnet18_w0.25", "resnet20", "resnet32", "resnet56",
             "resnet50", "vit_tiny", "vit_small")
TORCHVISION = ("resnet18", "resnet50")


def build_backbone(name: str, cifar_stem: bool, resolution: int | None = None) -> tuple[nn.Module, int]:
    """Return (module mapping (B,3,H,W) normalized floats -> (B, feat_dim), feat_dim).

    cifar_stem: for 32-64 px inputs. ResNets get a 3x3 stride-1 first conv and no max-pool (as in
    solo-learn / SimCLR's CIFAR variant), otherwise 32 px images shrink to 1x1 after the stem.
    ViTs get 4 px patches instead of 16 px so a 32 px image still has 64 tokens.
    name: one of BACKBONES, or timm:NAME for any timm model (gcl.timm_backbones).
    """
    if name in CIFAR_DEPTHS:
        net = cifar_resnet(name)  # designed for 32 px: its stem is always the small one
        return net, net.feat_dim
    if name in NARROW_RESNET18:
        net = narrow_resnet18(name, small_stem=cifar_stem)
        return net, net.feat_dim
    if name in TORCHVISION:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        feat_dim = net.fc.in_features
        net.fc = nn.Identity()  # features are the pooled 512/2048-d vector
        return net, feat_dim
    if name in GCL_VITS or name.startswith(TIMM_PREFIX):
        return build_timm(timm_spec(name, cifar_stem, resolution))
    raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}, or timm:NAME for a timm model")


def check_backbone(name: str, cifar_stem: bool) -> None:
    """A one-line BackboneError for a name gcl cannot build or a CIFAR stem that does not apply."""
    if name in BACKBONES:
        return
    if not name.startswith(TIMM_PREFIX):
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}, "
                            "or timm:NAME for a timm model")
    timm_spec(name, cifar_stem, None)


def source_of(name: str, cifar_stem: bool, resolution: int | None) -> dict:
    """Which library's module a backbone is, and how that library builds it (gcl-eval export's
    config.json): torchvision (a constructor name), timm (model name and create_model kwargs) or
    gcl (its own CIFAR ResNets: rebuilt with build_backbone)."""
    if name in TORCHVISION:
        return {"library": "torchvision", "model_name": name}
    if name in GCL_VITS or name.startswith(TIMM_PREFIX):
        spec = timm_spec(name, cifar_stem, resolution)
        return {"library": "timm", "model_name": spec["model_name"], "timm_kwargs": spec["kwargs"]}
    return {"library": "gcl", "model_name": name}


def load_backbone_weights(net: nn.Module, path: str | os.PathLike) -> None:
    """A pretrained start from a local .safetensors file, loaded strictly (a timm classifier head
    in the file is left out: gcl's backbones have none); any mismatch is one BackboneError line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise BackboneError(f"--backbone-weights {path}: file not found") from None
    except (SafetensorError, OSError) as exc:
        raise BackboneError(f"--backbone-weights {path} is not a safetensors file ({str(exc).splitlines()[0]})") from None
    head = (getattr(net, "pretrained_cfg", None) or {}).get("classifier")
    own = net.state_dict()
    if head:
        state = {k: v for k, v in state.items() if k in own or not k.startswith(head + ".")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if v]
        raise BackboneError(f"--backbone-weights {path} does not fit this backbone: {', '.join(parts)} keys")
    net.load_state_dict(state, strict=True)
