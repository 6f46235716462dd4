"""ESRGAN family: the RRDBNet build, strict loading, the family checks on a random-init network
saved like the real one, and (slow) the real Real-ESRGAN x4plus weights on CIFAR-10."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import family_checks as fc
from gcl.synth.generators import GeneratorLoadError, load_generator
from gcl.synth.generators.esrgan import ESRGAN_FILE, RRDBNet

NOISE = "noise(strength={s})"
CHECKS = fc.FAMILY_CHECKS  # the four properties, run for every family


@pytest.fixture(scope="module")
def random_esrgan(tmp_path_factory):
    """A random-init RRDBNet x4 (2 blocks: the loader reads the count from the keys) in the real
    file layout (fp16 convs as stored upstream)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = RRDBNet(blocks=2)
    with torch.no_grad():  # default init outputs ~0 +- 0.02: centre it and widen it so views show in uint8
        net.conv_last.weight.mul_(10)
        net.conv_last.bias.fill_(0.5)
    root = tmp_path_factory.mktemp("esrgan")
    save_file({k: v.half() if v.dim() == 4 else v for k, v in net.state_dict().items()}, str(root / ESRGAN_FILE))
    return load_generator("esrgan", str(root)), root


def test_rrdbnet_matches_published_size():
    net = RRDBNet()
    assert sum(p.numel() for p in net.parameters()) == 16_697_987  # the README's count
    assert len(net.state_dict()) == 702


@pytest.mark.parametrize("check", list(CHECKS))
def test_esrgan_views(random_esrgan, check):
    gen, _ = random_esrgan
    assert gen.downsample == 4 and gen.model_id == "rrdbnet-x4"  # unknown weights are not named after the real ones
    CHECKS[check](gen, NOISE, 16)


def test_strict_load_rejects_other_weights(tmp_path, random_esrgan):
    from safetensors.torch import load_file, save_file

    _, root = random_esrgan
    state = load_file(str(root / ESRGAN_FILE))
    state.pop("conv_last.bias")
    save_file(state, str(tmp_path / ESRGAN_FILE))
    with pytest.raises(GeneratorLoadError, match="does not match the RRDBNet"):
        load_generator("esrgan", str(tmp_path))
    with pytest.raises(GeneratorLoadError, match="--model DIR"):
        load_generator("esrgan", str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_real_esrgan_views_on_cifar(cifar_test_npz):
    """Real weights, real images (16 px -> 64 px): views differ from the original and stay plausible."""
    from gcl.synth.defaults import resolve_esrgan

    gen = load_generator("esrgan", str(resolve_esrgan()))
    assert gen.model_id == "realesrgan-x4plus"
    with np.load(cifar_test_npz) as z:
        x = torch.from_numpy(z["images"][:16]).permute(0, 3, 1, 2).float() / 255
    imgs = list(fc.to_uint8(torch.nn.functional.interpolate(x, size=64, mode="bicubic", align_corners=False).clamp(0, 1)))
    orig = np.stack(imgs).astype(float)[:, None]
    psnr = {}
    for s in (0.0, 0.2, 0.5):
        v, _ = fc.views(gen, imgs, NOISE, s, k=2)
        mse = ((v.astype(float) - orig) ** 2).mean()
        psnr[s] = 10 * np.log10(255 ** 2 / mse)
    assert psnr[0.0] > 20  # the plain 16 -> 64 px reconstruction keeps the content (README: ~22.6 dB at 32 px)
    assert psnr[0.0] > psnr[0.2] > psnr[0.5] > 15, psnr  # more noise, farther away, still a photo of the same thing
