"""mae against transformers' ViTMAEForPreTraining, on a model built from facebook/vit-mae-base's
published config (widths shrunk, random weights; patch 16, image_size 224 run at 64 px through the
position-embedding interpolation): the reference view is the model's forward with the same `noise`
(which patches are hidden), the predictions un-normalised with the input patches' mean and
variance when `norm_pix_loss` is set, unpatchified, visible patches pasted back, and the
processor's mean/std undone. Ratio 0 is the input itself."""

from __future__ import annotations

import pytest
import torch

from gcl.synth.generators import load_generator
from published import build, psnr, smooth_images

SIZE, PATCH = 64, 16
TOL = 1e-5


@pytest.fixture(scope="module", params=[False, True], ids=["published", "norm_pix_loss"])
def mae_dir(tmp_path_factory, request):
    """The published config, and the same with norm_pix_loss on (the un-normalisation path)."""
    overrides = {"config.json": {"norm_pix_loss": True}} if request.param else None
    return build("vit-mae-base", tmp_path_factory.mktemp("mae") / "vit-mae-base", overrides=overrides)


@torch.inference_mode()
def test_remask_is_the_models_reconstruction(mae_dir):
    from transformers import ViTMAEForPreTraining

    gen = load_generator("mae", str(mae_dir))
    ref_model = ViTMAEForPreTraining.from_pretrained(mae_dir).eval()
    x = smooth_images(2, SIZE)
    z = gen.encode(x)
    assert torch.equal(gen.sample(z, [None, {"ratio": 0.0}], [torch.Generator()] * 2).float(), gen.decode(z).float())
    _close(gen.decode(z), x)  # ratio 0: the input (normalised and back)

    ratio, seeds = 0.5, (3, 4)
    ours = gen.sample(z, [{"ratio": ratio}] * 2, [torch.Generator().manual_seed(s) for s in seeds]).float()
    assert gen._mae.config.mask_ratio == 0.75  # the loaded model keeps its published mask ratio
    n = (SIZE // PATCH) ** 2
    noise = torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(s)) for s in seeds])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # preprocessor_config.json
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = (x - mean) / std
    ref_model.config.mask_ratio = ratio  # int(16 x (1 - 0.5)) = 8 patches kept, as round(0.5 x 16) hidden
    out = ref_model(pixels, noise=noise, interpolate_pos_encoding=True)
    pred = out.logits
    if ref_model.config.norm_pix_loss:
        target = ref_model.patchify(pixels, interpolate_pos_encoding=True)
        pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
    pred = ref_model.unpatchify(pred, original_image_size=(SIZE, SIZE))
    mask = out.mask.view(2, 1, SIZE // PATCH, SIZE // PATCH).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
    ref = ((mask * pred + (1 - mask) * pixels) * std + mean).clamp(0, 1)
    assert int(out.mask.sum()) == 2 * n // 2
    assert (ours - x).abs().max() > 0.05
    _close(ours, ref)


def _close(ours, ref, tol=TOL):
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= tol, f"max diff {diff:.2e}, PSNR {psnr(ours, ref):.1f} dB"
