"""VQGAN family: a diffusers VQModel from a hub id or a local directory.

`VQModel.encode(x).latents` is the pre-quantization feature map and `decode()` quantizes, so
continuous latent ops fit between the two; token ops work on the codebook indices.

The pixel range the VQ-GAN was trained on belongs to the model, not to `VQModel`: aMUSEd's
(`model_index.json` says `Amused*Pipeline`) takes and returns [0, 1] (its pipelines build the
image processor with `do_normalize=False` and decode with `.sample.clip(0, 1)`); taming/LDM
VQ-GANs use [-1, 1]. `--pixel-range` overrides what the layout says; the manifest records it.
A config with `force_upcast: true` keeps the VQ-GAN in fp32 under a half-precision run.
"""

from __future__ import annotations

import os

import torch

from gcl.synth.generators.base import (Generator, GeneratorLoadError, channels_last, component_dtype,
                                       from_pretrained_or_explain, is_local, read_optional_config, state_dict_sha256)

VQ_SUBFOLDER = "vqvae"  # where an aMUSEd-layout repository keeps its VQ-GAN
PIXEL_RANGES = ("auto", "0-1", "-1-1")
UNIT_RANGE_PIPELINES = ("AmusedPipeline", "AmusedImg2ImgPipeline", "AmusedInpaintPipeline")  # VQ-GAN in [0, 1]


class VQGANGenerator(Generator):
    def __init__(self, vq, pixel_range: str, **kw):
        super().__init__(**kw)
        self._vq = vq
        self._unit = pixel_range == "0-1"
        self._vq_dtype = next(vq.parameters()).dtype  # fp32 when the config asks for it (force_upcast)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_last(x.to(self.device, self._vq_dtype))
        return self._vq.encode(x if self._unit else x * 2 - 1).latents

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self._vq.decode(channels_last(z.to(self.device, self._vq_dtype))).sample
        return (out if self._unit else (out + 1) / 2).clamp(0, 1)

    def codebook(self) -> torch.Tensor:
        return self._vq.quantize.embedding.weight

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, h, w) nearest-code indices (the quantizer's own choice)."""
        b, _, h, w = z.shape
        _, _, info = self._vq.quantize(z.to(self.device, self._vq_dtype))
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


def layout_pixel_range(model: str, without_index: str = "-1-1") -> str:
    """[0, 1] for a VQ-GAN of an aMUSEd pipeline (model_index.json beside vqvae/, or one level up
    when `model` is the vqvae/ folder itself), [-1, 1] for any other pipeline, and `without_index`
    when there is no model_index.json (a bare VQModel: the taming / LDM convention)."""
    index = read_optional_config(model, filename="model_index.json")
    if index is None and is_local(model) and os.path.basename(os.path.normpath(model)) == VQ_SUBFOLDER:
        index = read_optional_config(os.path.dirname(os.path.normpath(model)), filename="model_index.json")
    if index is None:
        return without_index
    return "0-1" if index.get("_class_name") in UNIT_RANGE_PIPELINES else "-1-1"


def resolve_pixel_range(model: str, pixel_range: str, without_index: str = "-1-1") -> str:
    if pixel_range not in PIXEL_RANGES:
        raise GeneratorLoadError(f"--pixel-range {pixel_range!r}: choose one of {', '.join(PIXEL_RANGES)}")
    return layout_pixel_range(model, without_index) if pixel_range == "auto" else pixel_range


def load_vq(model: str, device: torch.device, dtype: torch.dtype, **location):
    from diffusers import VQModel

    vq = from_pretrained_or_explain(VQModel, model, **location).eval()
    return vq.to(device, component_dtype(vq.config, dtype), memory_format=torch.channels_last)


def vq_description(vq, pixel_range: str) -> dict:
    """What the manifest records about the VQ-GAN (the pixel range is part of the generator id)."""
    return {"pixel_range": pixel_range, "vq_dtype": str(next(vq.parameters()).dtype).removeprefix("torch."),
            "num_codes": int(vq.config.num_vq_embeddings)}


def load(model: str, device: torch.device, dtype: torch.dtype, pixel_range: str = "auto") -> VQGANGenerator:
    from gcl.synth.defaults import VQGAN_DEFAULT

    location = vq_location(model, VQGAN_DEFAULT)
    vq = load_vq(model, device, dtype, **location)
    pixel_range = resolve_pixel_range(model, pixel_range)
    downsample = 2 ** (len(vq.config.block_out_channels) - 1)
    return VQGANGenerator(
        vq, pixel_range, family="vqgan", model_id=str(model), downsample=downsample, device=device, dtype=dtype,
        weights_sha256=state_dict_sha256(vq), has_codebook=True,
        extra={"arch": f"VQModel pixels {pixel_range}", **vq_description(vq, pixel_range),
               "latent_channels": int(vq.config.latent_channels)},
    )
