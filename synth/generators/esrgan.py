"""ESRGAN family: the Real-ESRGAN x4plus generator (RRDBNet), a real pretrained GAN.

GCL reading: encoder = antialiased (area) downsampling by 4, then the network's first
convolution; the latent is that first feature map (64 channels at 1/4 size), where the
existing ops (noise, mask, mix) act; decoder = the rest of the GAN, which invents the detail
the small image lacks. (Noise on the small RGB image instead changes the output more at the
same std-relative strength: 23.8 vs 28.2 dB from the plain reconstruction at 0.25, 17.7 vs
20.4 dB at 1.0, on 8 CIFAR-10 images at 64 px; the feature map is the latent here so that mask
and mix act on features, as with the other families.)

The network is built here from ../shared/models/realesrgan-x4plus/README.md (the layout of
basicsr's RRDBNet, whose key names the official RealESRGAN_x4plus.pth `params_ema` shares) and
loaded with strict=True.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from gcl.synth.generators.base import Generator, GeneratorLoadError, channels_last, state_dict_sha256

SCALE = 4
RESIDUAL_SCALE = 0.2  # each dense block and each RRDB adds 0.2 x its output (the published design)
ESRGAN_FILE = "RealESRGAN_x4plus.safetensors"
OFFICIAL_FILE = "RealESRGAN_x4plus.pth"
# state_dict_sha256 of the published weights (the same from our safetensors or the official .pth,
# both cast to fp32): a model is named by what its weights are, never by where they lie.
KNOWN_WEIGHTS = {"7344be90a1d4a9803ae4862890a309f80a45fee4ed3ce3f38c86360381143233": "realesrgan-x4plus"}


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and all earlier outputs (growth `grow`)."""

    def __init__(self, feat: int = 64, grow: int = 32):
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", nn.Conv2d(feat + i * grow, grow, 3, 1, 1))
        self.conv5 = nn.Conv2d(feat + 4 * grow, feat, 3, 1, 1)
        self.act = _lrelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + RESIDUAL_SCALE * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    def __init__(self, feat: int = 64, grow: int = 32):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(feat, grow) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """x4 RRDBNet: conv_first -> 23 RRDBs -> conv_body (+skip) -> 2x (nearest x2, conv) -> conv_hr -> conv_last."""

    def __init__(self, feat: int = 64, blocks: int = 23, grow: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(feat, grow) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
        self.act = _lrelu()

    def decode_features(self, feat: torch.Tensor) -> torch.Tensor:
        """Everything after conv_first: the part that invents detail."""
        feat = feat + self.conv_body(self.body(feat))
        feat = self.act(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.act(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.act(self.conv_hr(feat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_features(self.conv_first(x))


class ESRGANGenerator(Generator):
    def __init__(self, net: RRDBNet, **kw):
        super().__init__(**kw)
        self._net = net

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x.to(self.device, self.dtype), scale_factor=1 / SCALE, mode="area")  # box filter: antialiased
        return self._net.conv_first(channels_last(small))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._net.decode_features(channels_last(z.to(self.device, self.dtype))).clamp(0, 1)


def load_state(path: str) -> dict:
    """Weights from our safetensors file or the official .pth (its params_ema dict), as fp32."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("params_ema", state.get("params", state))
    return {k: v.float() for k, v in state.items()}  # conv weights are stored fp16


def weights_file(model: str) -> str:
    if model in KNOWN_WEIGHTS.values() and not os.path.exists(model):
        from gcl.synth.defaults import resolve_esrgan  # the name a manifest records: resolve it again (dask workers)

        model = str(resolve_esrgan())
    if os.path.isfile(model):
        return model
    for name in (ESRGAN_FILE, OFFICIAL_FILE):
        if os.path.isfile(os.path.join(model, name)):
            return os.path.join(model, name)
    raise GeneratorLoadError(f"{model} holds neither {ESRGAN_FILE} nor {OFFICIAL_FILE}; pass --model DIR with one of them")


def load(model: str, device: torch.device, dtype: torch.dtype) -> ESRGANGenerator:
    path = weights_file(model)
    state = load_state(path)
    # the block count is read from the keys (x4plus: 23; the anime_6B variant: 6); the rest is fixed
    blocks = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("body.")), default=-1)
    net = RRDBNet(blocks=blocks)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise GeneratorLoadError(f"{os.path.basename(path)} does not match the RRDBNet x4 architecture: "
                                 f"{str(exc).splitlines()[0]}") from None
    sha = state_dict_sha256(net)
    net.eval().to(device, dtype, memory_format=torch.channels_last)
    return ESRGANGenerator(net, family="esrgan", model_id=KNOWN_WEIGHTS.get(sha, "rrdbnet-x4"), downsample=SCALE, device=device,
                           dtype=dtype, weights_sha256=sha,
                           extra={"arch": f"RRDBNet-x4 (64 feat, {blocks} blocks, grow 32)", "latent": "conv_first feature map"})
