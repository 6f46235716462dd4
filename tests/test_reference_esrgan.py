"""esrgan against spandrel's ESRGAN (an independent RRDBNet that loads RealESRGAN_x4plus.pth): gcl's
reconstruction = the reference network on the area-downsampled image; for the real x4plus
weights too (slow)."""

from __future__ import annotations

import pytest
import spandrel  # test dependency (pyproject's test extra): the reference RRDBNet
import torch
import torch.nn.functional as F

from gcl.synth.generators import load_generator
from gcl.synth.generators.esrgan import ESRGAN_FILE, RRDBNet, load_state, weights_file
from published import psnr, smooth_images

TOL = 1e-4  # fp32 on CPU: the same maths; channels_last convolutions sum in another order


def _reference(state: dict):
    return spandrel.ModelLoader().load_from_state_dict(state).model.eval()


def _check(gen, ref, x):
    with torch.inference_mode():
        ours = gen.decode(gen.encode(x)).float()
        expected = ref(F.interpolate(x, scale_factor=0.25, mode="area")).clamp(0, 1)
    diff = (ours - expected).abs().max().item()
    assert diff <= TOL, f"max diff {diff:.2e}, PSNR {psnr(ours, expected):.1f} dB"


def test_random_rrdbnet_equals_spandrel(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = RRDBNet(blocks=2)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.5)  # centred outputs: not all clamped
    save_file(net.state_dict(), str(tmp_path / ESRGAN_FILE))
    ref = _reference(load_state(str(tmp_path / ESRGAN_FILE)))
    assert type(ref).__name__ == "RRDBNet" and ref.scale == 4
    _check(load_generator("esrgan", str(tmp_path)), ref, smooth_images(2, 32))


@pytest.mark.slow
def test_realesrgan_x4plus_equals_spandrel():
    from gcl.synth.defaults import resolve_esrgan

    model = str(resolve_esrgan())  # ../shared/models/realesrgan-x4plus beside the checkout
    ref = _reference(load_state(weights_file(model)))
    _check(load_generator("esrgan", model), ref, smooth_images(1, 64))
