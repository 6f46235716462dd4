"""Generator families behind one interface (see base.Generator). One module per family."""

from __future__ import annotations

import importlib

import torch

from gcl.synth.defaults import HubUnavailable, check_hub_model
from gcl.synth.generators.base import Generator, GeneratorLoadError, pick_device

# family name -> module with load(model, device, dtype): autoencoders (taesd, vqgan), a GAN
# (esrgan), diffusion (SDEdit img2img) and image transformers (maskgit, mae).
FAMILIES = {
    "taesd": "gcl.synth.generators.taesd",
    "vqgan": "gcl.synth.generators.vqgan",
    "esrgan": "gcl.synth.generators.esrgan",
    "diffusion": "gcl.synth.generators.diffusion",
    "maskgit": "gcl.synth.generators.maskgit",
    "mae": "gcl.synth.generators.mae",
}
# The recipe (preset name or spec) a family runs when --recipe is not given.
DEFAULT_RECIPES = {"taesd": "noise", "vqgan": "noise", "esrgan": "esrgan", "diffusion": "sdedit",
                   "maskgit": "resample", "mae": "remask"}
# Families with no default model: the user names one (a hub id or a local directory).
NEEDS_MODEL = {"diffusion": "a diffusers UNet2DModel (config.json + scheduler_config.json, or unet/ + scheduler/) or a Stable Diffusion layout",
               "maskgit": "an aMUSEd layout (vqvae/, transformer/, text_encoder/, tokenizer/)",
               "mae": "a transformers ViTMAEForPreTraining directory, e.g. facebook/vit-mae-base"}


# Families whose VQ-GAN pixel range (--pixel-range) can be stated by the user.
PIXEL_RANGE_FAMILIES = ("vqgan", "maskgit")


def load_generator(family: str, model: str | None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   pixel_range: str = "auto") -> Generator:
    if family not in FAMILIES:
        raise GeneratorLoadError(f"unknown generator {family!r}; choose one of {', '.join(sorted(FAMILIES))}")
    if model is None:
        model = default_model(family)
    try:
        check_hub_model(model)
    except HubUnavailable as exc:
        raise GeneratorLoadError(str(exc)) from None
    module = importlib.import_module(FAMILIES[family])
    if family in PIXEL_RANGE_FAMILIES:
        return module.load(model, pick_device(device), dtype, pixel_range=pixel_range)
    if pixel_range != "auto":
        raise GeneratorLoadError(f"--pixel-range is a VQ-GAN setting ({', '.join(PIXEL_RANGE_FAMILIES)}), not for {family}")
    return module.load(model, pick_device(device), dtype)


def default_model(family: str) -> str:
    from gcl.synth import defaults

    if family == "taesd":
        return str(defaults.resolve_taef2())
    if family == "esrgan":
        return str(defaults.resolve_esrgan())
    if family == "vqgan":
        return defaults.VQGAN_DEFAULT
    raise GeneratorLoadError(f"--generator {family} needs --model DIR or a hub id: {NEEDS_MODEL[family]}")


__all__ = ["DEFAULT_RECIPES", "FAMILIES", "Generator", "GeneratorLoadError", "load_generator"]
