"""The checkpoint contract between gcl-train (writer) and gcl-eval (reader).

gcl-train stores, beside Lightning's own keys, a plain-type info block under CKPT_INFO_KEY
(method, backbone, stem, resolution, normalisation, epoch, config) and the backbone's weights
under `backbone.*` in the state dict. `load_backbone(ckpt)` reads it with
`torch.load(weights_only=True)`: no pickled classes are needed to evaluate a run.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gcl.backbones import build_backbone

# Key under which gcl-train stores its plain-type run info inside the Lightning checkpoint.
CKPT_INFO_KEY = "gcl"


def load_backbone(ckpt_path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """The public API for gcl-train's checkpoints: (backbone in eval mode, info dict).

    ckpt_path: a checkpoint gcl-train wrote (RUN/checkpoints/last.ckpt, best.ckpt or avg.ckpt),
    read with torch.load(weights_only=True): plain tensors and dicts, no pickled code runs.
    The backbone is the module gcl.backbones.build_backbone makes (a torchvision / timm module or
    gcl's own CIFAR ResNet) with the run's weights; it maps normalised (B, 3, R, R) floats to
    (B, feat_dim) features. Feed it `preprocess(uint8 images, info)`.

    info has: method, backbone, cifar_stem, resolution, mean, std, feat_dim, epoch, global_step,
    shards, gen_prob (and the full run config under 'config'). Raises ValueError for a file that
    is no gcl-train checkpoint. docs/python-api.md shows it in use; `gcl-eval export` writes the
    same backbone for use without gcl.
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
