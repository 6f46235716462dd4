"""Generator families behind one interface (see base.Generator). One module per family."""

from __future__ import annotations

import importlib

import torch

from gcl.synth.generators.base import Generator, GeneratorLoadError, pick_device

# family name -> module with load(model, device, dtype); diffusion (img2img) and image-transformer
# (MaskGIT/MAE) families register here as their modules land.
FAMILIES = {"taesd": "gcl.synth.generators.taesd", "vqgan": "gcl.synth.generators.vqgan"}


def load_generator(family: str, model: str | None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Generator:
    if family not in FAMILIES:
        raise GeneratorLoadError(f"unknown generator {family!r}; choose one of {', '.join(sorted(FAMILIES))}")
    if model is None:
        if family != "taesd":
            raise GeneratorLoadError(f"--generator {family} needs --model (a hub id or a local directory)")
        from gcl.synth.defaults import resolve_taef2

        model = str(resolve_taef2())
    module = importlib.import_module(FAMILIES[family])
    gen = module.load(model, pick_device(device), dtype)
    return gen


__all__ = ["FAMILIES", "Generator", "GeneratorLoadError", "load_generator"]
