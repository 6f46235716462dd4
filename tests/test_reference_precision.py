"""Every family in bfloat16 and float16 (tiny models from published configs, on CPU): finite views,
components whose config says `force_upcast` stay in float32, and the view within a stated PSNR of
the float32 view (same seed, same recipe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcl.synth.generators import load_generator
from gcl.synth.recipe import parse_recipe
from gcl.synth.worker import generate_views
from published import build, smooth_images

SIZE = 64
# family, fixture (None: a tiny RRDBNet), recipe, PSNR bound (dB) of the half-precision view vs float32
# (measured on 2 x86 cores: bf16 43-62 dB, fp16 54-73 dB; the bounds leave ~10 dB for other CPUs)
CASES = {
    "taesd": ("taesd", "noise(strength=0.5)", 45),
    "vqgan": ("amused-256", "noise(strength=0.5)", 60),  # force_upcast: the VQ-GAN stays float32 (equal views)
    "vqgan-ldm": ("ldm-celebahq-256-vqvae", "noise(strength=0.5)", 30),
    "esrgan": (None, "noise(strength=0.5)", 40),
    "diffusion-pixel": ("ddpm-cifar10-32", "sdedit(strength=0.5, steps=5)", 40),
    "diffusion-sd15": ("stable-diffusion-v1-5", "sdedit(strength=0.5, steps=5)", 40),
    "maskgit": ("amused-256", "resample(ratio=0.5, steps=3)", 30),  # sampled tokens may flip under bf16 logits
    "mae": ("vit-mae-base", "remask(ratio=0.5)", 45),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from safetensors.torch import save_file

    from gcl.synth.generators.esrgan import ESRGAN_FILE, RRDBNet

    root = tmp_path_factory.mktemp("precision")
    dirs = {name: build(name, root / name) for name in {c[0] for c in CASES.values() if c[0]}}
    torch.manual_seed(0)
    net = RRDBNet(blocks=1)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.5)  # centred outputs: views visible in uint8
    (root / "esrgan").mkdir()
    save_file(net.state_dict(), str(root / "esrgan" / ESRGAN_FILE))
    dirs[None] = root / "esrgan"
    return dirs


def _views(gen, recipe: str) -> np.ndarray:
    imgs = [np.ascontiguousarray(a) for a in (smooth_images(2, SIZE).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)]
    out, _ = generate_views(gen, imgs, ["a", "b"], parse_recipe(recipe), 1, 0)
    return np.stack([np.stack(v) for v in out]).astype(np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


_FP32_VIEWS: dict = {}  # case -> float32 views (computed once for both half dtypes)


def _fp32_views(case: str, family: str, model: str, recipe: str) -> np.ndarray:
    if case not in _FP32_VIEWS:
        _FP32_VIEWS[case] = _views(load_generator(family, model, "cpu", torch.float32), recipe)
    return _FP32_VIEWS[case]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", list(CASES))
def test_half_precision_views(model_dirs, case, dtype):
    fixture, recipe, bound = CASES[case]
    family = case.split("-")[0]
    model = str(model_dirs[fixture])
    half = load_generator(family, model, "cpu", dtype)
    with torch.inference_mode():
        z = half.encode(smooth_images(2, SIZE))
        out = half.decode(z)
    assert torch.isfinite(z.float()).all() and torch.isfinite(out.float()).all()
    if family in ("vqgan", "maskgit") and fixture == "amused-256":  # vqvae config: force_upcast true
        assert next(half._vq.parameters()).dtype == torch.float32 and half.extra["vq_dtype"] == "float32"
    if case == "diffusion-sd15":  # AutoencoderKL's force_upcast (default true): the VAE stays fp32, the UNet does not
        assert next(half._vae.parameters()).dtype == torch.float32 and next(half._unet.parameters()).dtype == dtype
    a, b = _fp32_views(case, family, model, recipe), _views(half, recipe)
    score = _psnr(a, b)
    print(f"{case} {str(dtype).removeprefix('torch.')}: {score:.1f} dB")
    assert score >= bound, f"{case} {dtype}: {score:.1f} dB < {bound} dB"
