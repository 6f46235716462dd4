"""VQGAN family: a diffusers VQModel from a hub id or a local directory.

`VQModel.encode(x).latents` is the pre-quantization feature map and `decode()` quantizes, so
continuous latent ops fit between the two; token ops work on the codebook indices.
"""

from __future__ import annotations

import torch

import os

from gcl.synth.generators.base import Generator, channels_last, from_pretrained_or_explain, is_local, state_dict_sha256

VQ_SUBFOLDER = "vqvae"  # where an aMUSEd-layout repository keeps its VQ-GAN


class VQGANGenerator(Generator):
    def __init__(self, vq, **kw):
        super().__init__(**kw)
        self._vq = vq

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._vq.encode(channels_last(x.to(self.device, self.dtype)) * 2 - 1).latents

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self._vq.decode(channels_last(z.to(self.device, self.dtype))).sample
        return ((out + 1) / 2).clamp(0, 1)

    def codebook(self) -> torch.Tensor:
        return self._vq.quantize.embedding.weight

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, h, w) nearest-code indices (the quantizer's own choice)."""
        b, _, h, w = z.shape
        _, _, info = self._vq.quantize(z.to(self.device, self.dtype))
        return info[2].view(b, h, w)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, C, h, w) codebook vectors; decode() re-quantizes them to themselves."""
        return self.codebook()[idx].permute(0, 3, 1, 2).contiguous()


def vq_location(model: str, default_hub_id: str) -> dict:
    """A bare VQModel directory, or the vqvae/ folder of an aMUSEd-layout one (the default model)."""
    if is_local(model):
        bare = os.path.isfile(os.path.join(model, "config.json"))
        return {} if bare or not os.path.isdir(os.path.join(model, VQ_SUBFOLDER)) else {"subfolder": VQ_SUBFOLDER}
    return {"subfolder": VQ_SUBFOLDER} if model == default_hub_id else {}


def load(model: str, device: torch.device, dtype: torch.dtype) -> VQGANGenerator:
    from diffusers import VQModel

    from gcl.synth.defaults import VQGAN_DEFAULT

    vq = from_pretrained_or_explain(VQModel, model, **vq_location(model, VQGAN_DEFAULT)).eval().to(device, dtype, memory_format=torch.channels_last)
    downsample = 2 ** (len(vq.config.block_out_channels) - 1)
    return VQGANGenerator(
        vq, family="vqgan", model_id=str(model), downsample=downsample, device=device, dtype=dtype,
        weights_sha256=state_dict_sha256(vq), has_codebook=True,
        extra={"arch": "VQModel", "num_codes": int(vq.config.num_vq_embeddings), "latent_channels": int(vq.config.latent_channels)},
    )
