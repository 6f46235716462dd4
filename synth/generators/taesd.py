"""Tiny autoencoders (TAESD family): diffusers AutoencoderTiny checkpoints (taesd, taesdxl,
taesd3, taef1) and TAEF2, whose extra GroupNorm "pool" branch no diffusers class has, so it is
built here from the architecture in ../shared/models/taef2/README.md and loaded with strict=True.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gcl.synth.generators.base import (Generator, GeneratorLoadError, channels_last, from_pretrained_or_explain,
                                       state_dict_sha256)

TAEF2_FILES = ("taef2_encoder.safetensors", "taef2_decoder.safetensors")


def _conv(cin: int, cout: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, **kwargs)


class TaeBlock(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus skip, ReLU; TAEF2's pooled variant first adds a global-ish
    1x1 bottleneck with GroupNorm (keys N.pool.0/1/3)."""

    def __init__(self, cin: int, cout: int, with_pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(cin, cout), nn.ReLU(), _conv(cout, cout), nn.ReLU(), _conv(cout, cout))
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.pool = (
            nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.GroupNorm(4, 256), nn.ReLU(), nn.Conv2d(256, 64, 1, bias=False))
            if with_pool
            else None
        )
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class _TanhClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def taef2_encoder() -> nn.Sequential:
    layers: list[nn.Module] = [_conv(3, 64), TaeBlock(64, 64)]
    for stage in range(3):
        pooled = stage == 2  # only the last stage's blocks carry the pool branch
        layers += [_conv(64, 64, stride=2, bias=False)] + [TaeBlock(64, 64, pooled) for _ in range(3)]
    layers.append(_conv(64, 32))
    return nn.Sequential(*layers)


def taef2_decoder() -> nn.Sequential:
    layers: list[nn.Module] = [_TanhClamp(), _conv(32, 64), nn.ReLU()] + [TaeBlock(64, 64, True) for _ in range(3)]
    for blocks in (3, 3, 1):
        layers += [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)] + [TaeBlock(64, 64) for _ in range(blocks)]
    layers.append(_conv(64, 3))
    return nn.Sequential(*layers)


class TaesdGenerator(Generator):
    """encode/decode in [0, 1]; `scale_pm1` marks diffusers modules that expect [-1, 1]."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, scale_pm1: bool, **kw):
        super().__init__(**kw)
        self._enc, self._dec, self._scale_pm1 = encoder, decoder, scale_pm1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_last(x.to(self.device, self.dtype))
        return self._enc(x * 2 - 1 if self._scale_pm1 else x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self._dec(channels_last(z.to(self.device, self.dtype)))
        if self._scale_pm1:
            out = (out + 1) / 2
        return out.clamp(0, 1)


def is_taef2_dir(model: str) -> bool:
    return all((Path(model) / f).is_file() for f in TAEF2_FILES)


def load_taef2(model_dir: str, device: torch.device, dtype: torch.dtype) -> TaesdGenerator:
    from safetensors.torch import load_file

    encoder, decoder = taef2_encoder(), taef2_decoder()
    for module, fname in ((encoder, TAEF2_FILES[0]), (decoder, TAEF2_FILES[1])):
        state = {k: v.float() for k, v in load_file(os.path.join(model_dir, fname)).items()}  # stored fp16
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise GeneratorLoadError(f"{fname} in {model_dir} does not match the TAEF2 architecture: {str(exc).splitlines()[0]}") from None
    encoder.eval().to(device, dtype, memory_format=torch.channels_last)
    decoder.eval().to(device, dtype, memory_format=torch.channels_last)
    return TaesdGenerator(
        encoder, decoder, scale_pm1=False, family="taesd", model_id=str(model_dir), downsample=8,
        device=device, dtype=dtype, weights_sha256=state_dict_sha256(encoder, decoder), extra={"arch": "taef2"},
    )


def load(model: str, device: torch.device, dtype: torch.dtype) -> TaesdGenerator:
    if os.path.isdir(model) and is_taef2_dir(model):
        return load_taef2(model, device, dtype)
    from diffusers import AutoencoderTiny

    vae = from_pretrained_or_explain(AutoencoderTiny, model).eval().to(device, dtype, memory_format=torch.channels_last)
    downsample = 2 ** sum(1 for m in vae.encoder.layers if isinstance(m, nn.Conv2d) and m.stride[0] == 2)
    return TaesdGenerator(
        vae.encoder, vae.decoder, scale_pm1=True, family="taesd", model_id=str(model), downsample=downsample,
        device=device, dtype=dtype, weights_sha256=state_dict_sha256(vae), extra={"arch": "AutoencoderTiny"},
    )
