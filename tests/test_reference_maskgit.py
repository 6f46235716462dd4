"""maskgit against diffusers' aMUSEd pipelines, on a model built from amused/amused-256's published
configs (widths shrunk, random weights): strength 0 = AmusedImg2ImgPipeline at strength 0 (the VQ
reconstruction in [0, 1]); `resample(ratio, steps)` = AmusedInpaintPipeline given the same token
mask and the same generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcl.synth.generators import load_generator
from published import build, psnr, smooth_images

SIZE = 64  # f16 VQ-GAN: 4 x 4 tokens
INPAINT_SIZE = 256  # the inpainting pipeline's mask processor needs >= 16 tokens a side
TOL = 1e-4  # fp32 on CPU: the same maths; channels_last convolutions sum in another order (~1e-5)


@pytest.fixture(scope="module")
def amused_dir(tmp_path_factory):
    return build("amused-256", tmp_path_factory.mktemp("amused") / "amused-256")


@pytest.fixture(scope="module")
def gen(amused_dir):
    return load_generator("maskgit", str(amused_dir))


def _pipeline(root, cls_name: str):
    import diffusers
    from diffusers import AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    cls = getattr(diffusers, cls_name)
    return cls(vqvae=VQModel.from_pretrained(root / "vqvae"), tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
               text_encoder=CLIPTextModelWithProjection.from_pretrained(root / "text_encoder"),
               transformer=UVit2DModel.from_pretrained(root / "transformer"),
               scheduler=AmusedScheduler.from_pretrained(root / "scheduler"))


def test_layout_sets_unit_pixel_range_and_fp32_vq(gen):
    assert gen.extra["pixel_range"] == "0-1" and "pixels 0-1" in gen.id
    assert gen.extra["temperature"] == [2, 0] and gen.extra["mask_token_id"] == 127


@torch.inference_mode()
def test_strength_zero_is_the_pipelines_reconstruction(gen, amused_dir):
    x = smooth_images(2, SIZE)
    ours = gen.decode(gen.encode(x)).float()
    pipe = _pipeline(amused_dir, "AmusedImg2ImgPipeline")
    ref = pipe(prompt=[""] * 2, image=x, strength=0.0, num_inference_steps=4, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    vq = pipe.vqvae
    plain = vq.decode(vq.encode(x).latents).sample.clip(0, 1)  # VQModel.decode(VQModel.encode(x)) on [0, 1]
    for other in (ref, plain):
        assert (ours - other).abs().max() <= TOL, f"max diff {(ours - other).abs().max():.2e}, PSNR {psnr(ours, other):.1f} dB"


@torch.inference_mode()
@pytest.mark.parametrize("ratio, steps", [(0.5, 4), (0.25, 3)])
def test_resample_is_the_inpainting_pipeline(gen, amused_dir, ratio, steps):
    from PIL import Image

    x = smooth_images(1, INPAINT_SIZE, seed=3)
    seed = 1234
    ours = gen.sample(gen.encode(x), [{"ratio": ratio, "steps": steps}], [torch.Generator().manual_seed(seed)]).float()
    # the same token positions as gcl draws, as the pipeline's mask image (one pixel per token)
    ref_gen = torch.Generator().manual_seed(seed)
    side = INPAINT_SIZE // gen.downsample
    n = max(1, int(round(ratio * side * side)))
    mask = np.zeros(side * side, np.uint8)
    mask[torch.randperm(side * side, generator=ref_gen)[:n].numpy()] = 255
    ref = _pipeline(amused_dir, "AmusedInpaintPipeline")(
        prompt="", image=x, mask_image=Image.fromarray(mask.reshape(side, side), "L"), num_inference_steps=steps,
        generator=ref_gen, output_type="pt").images  # guidance_scale 10 with "" both ways = the plain prediction
    plain = gen.decode(gen.encode(x)).float()
    assert (ours - plain).abs().max() > 0.01  # the view really resampled something
    assert (ours - ref).abs().max() <= TOL, f"max diff {(ours - ref).abs().max():.2e}, PSNR {psnr(ours, ref):.1f} dB"


def test_pixel_range_option_overrides_the_layout(amused_dir):
    gen = load_generator("maskgit", str(amused_dir), pixel_range="-1-1")
    assert gen.extra["pixel_range"] == "-1-1" and "pixels -1-1" in gen.id
