"""timm backbones: gcl's ViTs and any timm model by name (`--backbone timm:NAME`).

Every timm model is built with num_classes=0, so its output is timm's pooled feature (global
average pool for CNNs, the CLS token for ViTs) and its width is `num_features`. The CIFAR stem
is applied where a timm family has one to shrink: ResNets (a plain 7x7 stride-2 first conv
becomes a 3x3 stride-1 conv, a deep stem's first conv gets stride 1, no max-pool: what gcl does
to torchvision's ResNets) and ViTs (4 px patches, so 32 px images keep 64 tokens). Other
families are refused with the stem on rather than silently trained with a 32 px input shrunk to
1x1. `timm_spec` is the one description of what gcl builds: gcl-train and gcl-eval build from it,
and `gcl-eval export` writes it into config.json so timm alone rebuilds the module.
"""

from __future__ import annotations

import torch.nn as nn

from gcl.errors import UserError

TIMM_PREFIX = "timm:"
# gcl's own ViT names -> timm models (4 px patches with the CIFAR stem)
GCL_VITS = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}
# timm's model modules whose stem the CIFAR option shrinks
STEM_FAMILIES = {"timm.models.resnet": "resnet", "timm.models.vision_transformer": "vit"}


class BackboneError(UserError):
    """A backbone name, stem or weights file that cannot be used (one-line message)."""


def timm_family(model_name: str) -> str | None:
    """'resnet', 'vit' (the families with a CIFAR stem) or None; BackboneError for an unknown name."""
    import timm
    from timm.models import model_entrypoint, split_model_name_tag

    if not timm.is_model(model_name):
        raise BackboneError(f"timm has no model {model_name!r}; list them with: python -c \"import timm; "
                            "print(timm.list_models('resnet*'))\"")
    return STEM_FAMILIES.get(model_entrypoint(split_model_name_tag(model_name)[0]).__module__)


def timm_spec(name: str, cifar_stem: bool, resolution: int | None) -> dict:
    """{'model_name', 'kwargs' (for timm.create_model, num_classes=0 included), 'resnet_cifar_stem'}
    for gcl's ViTs and timm:NAME; BackboneError when the CIFAR stem does not apply."""
    model_name = GCL_VITS.get(name) or name[len(TIMM_PREFIX):]
    family = timm_family(model_name)
    kwargs: dict = {"num_classes": 0}
    if family == "vit":
        # dynamic_img_size: another eval resolution interpolates the position embeddings
        kwargs["dynamic_img_size"] = True
        if cifar_stem or name in GCL_VITS:
            kwargs["img_size"] = resolution or (32 if cifar_stem else 224)
        if cifar_stem:
            kwargs["patch_size"] = 4
    elif cifar_stem and family is None:
        raise BackboneError(f"the CIFAR stem applies to timm ResNets and ViTs, not to {name}: add --no-cifar-stem "
                            "(cifar_stem: false in a recipe)")
    return {"model_name": model_name, "kwargs": kwargs, "resnet_cifar_stem": bool(cifar_stem and family == "resnet")}


def build_timm(spec: dict) -> tuple[nn.Module, int]:
    import timm

    net = timm.create_model(spec["model_name"], pretrained=False, **spec["kwargs"])
    if spec["resnet_cifar_stem"]:
        shrink_resnet_stem(net)
    return net, net.num_features


def shrink_resnet_stem(net: nn.Module) -> None:
    """timm ResNet -> CIFAR stem: a 3x3 stride-1 first conv (a deep stem keeps its convs, the first
    at stride 1) and no max-pool."""
    if isinstance(net.conv1, nn.Conv2d):
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        net.conv1[0].stride = (1, 1)
    net.maxpool = nn.Identity()
