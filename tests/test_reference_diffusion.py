"""diffusion against diffusers, on models built from published configs (widths shrunk, random
weights): google/ddpm-cifar10-32 in its root layout (DDIMScheduler from its DDPM config: clip_sample,
set_alpha_to_one default), Stable Diffusion 1.5 (epsilon, PNDM config as DDIM: leading spacing,
steps_offset 1, set_alpha_to_one false; AutoencoderKL scaling) and Stable Diffusion 2.1
(v-prediction) with taesd as vae/ (AutoencoderTiny): strength 0 = the autoencoder's reconstruction,
sdedit(strength, steps) = StableDiffusionImg2ImgPipeline with the same generator (for pixel
models, the same add_noise + DDIMScheduler.step loop on the UNet2DModel)."""

from __future__ import annotations

import pytest
import torch

from gcl.synth.generators import load_generator
from published import build, psnr, smooth_images

TOL = 1e-4  # fp32 on CPU: the same maths; channels_last convolutions sum in another order


def _close(ours, ref, tol=TOL):
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= tol, f"max diff {diff:.2e}, PSNR {psnr(ours, ref):.1f} dB"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {n: build(n, root / n) for n in ("ddpm-cifar10-32", "stable-diffusion-v1-5", "stable-diffusion-2-1-taesd")}


def _img2img(root):
    from diffusers import (AutoencoderKL, AutoencoderTiny, DDIMScheduler, StableDiffusionImg2ImgPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer

    vae_cls = AutoencoderTiny if (root / "vae" / "config.json").read_text().count("AutoencoderTiny") else AutoencoderKL
    return StableDiffusionImg2ImgPipeline(
        vae=vae_cls.from_pretrained(root / "vae"), text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"), unet=UNet2DConditionModel.from_pretrained(root / "unet"),
        scheduler=DDIMScheduler.from_pretrained(root / "scheduler"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def _view(gen, z, strength, steps, seed):
    return gen.sample(z, [{"strength": strength, "steps": steps}], [torch.Generator().manual_seed(seed)]).float()


@torch.inference_mode()
@pytest.mark.parametrize("strength, steps", [(0.35, 20)])
def test_pixel_model_in_root_layout(models, strength, steps):
    from diffusers import DDIMScheduler, UNet2DModel

    root = models["ddpm-cifar10-32"]
    gen = load_generator("diffusion", str(root))
    assert gen.extra["set_alpha_to_one"] is True and gen.extra["clip_sample"] is True
    x = smooth_images(1, 32)
    _close(gen.decode(gen.encode(x)), x)  # strength 0: the image itself
    unet = UNet2DModel.from_pretrained(root).eval()  # diffusers' own way to load this layout: no subfolder
    sched = DDIMScheduler.from_pretrained(root)
    sched.set_timesteps(steps)
    timesteps = sched.timesteps[steps - min(int(steps * strength), steps):]
    g = torch.Generator().manual_seed(5)
    sample = sched.add_noise(x * 2 - 1, torch.randn(x.shape, generator=g), timesteps[:1])
    for t in timesteps:
        sample = sched.step(unet(sample, t).sample, t, sample).prev_sample
    ref = (sample / 2 + 0.5).clamp(0, 1)
    ours = _view(gen, gen.encode(x), strength, steps, 5)
    assert (ours - x).abs().max() > 0.05  # the view really changed
    _close(ours, ref)


@torch.inference_mode()
def test_sd15_epsilon_autoencoder_kl(models):
    root = models["stable-diffusion-v1-5"]
    gen = load_generator("diffusion", str(root))
    assert gen.extra["timestep_spacing"] == "leading" and gen.extra["steps_offset"] == 1
    assert gen.extra["set_alpha_to_one"] is False and gen.extra["prediction"] == "epsilon"
    pipe = _img2img(root)
    x = smooth_images(1, 64)
    z = gen.encode(x)
    _close(gen.decode(z), (pipe.vae(x * 2 - 1).sample / 2 + 0.5).clamp(0, 1))  # the posterior mean, decoded
    ours = _view(gen, z, 0.5, 10, 11)
    # the pipeline takes 4-channel latents as the encoded image (gcl's posterior mean, already scaled)
    ref = pipe(prompt="", image=z, strength=0.5, num_inference_steps=10, generator=torch.Generator().manual_seed(11),
               output_type="pt").images
    assert (ours - gen.decode(z)).abs().max() > 0.05
    _close(ours, ref)


@torch.inference_mode()
@pytest.mark.parametrize("strength, steps", [(0.6, 5), (1.0, 3)])
def test_sd21_v_prediction_with_taesd(models, strength, steps):
    root = models["stable-diffusion-2-1-taesd"]
    gen = load_generator("diffusion", str(root))
    assert gen.extra["prediction"] == "v_prediction" and "AutoencoderTiny" in gen.extra["arch"]
    pipe = _img2img(root)
    x = smooth_images(1, 64)
    z = gen.encode(x)
    _close(gen.decode(z), (pipe.vae.decode(pipe.vae.encode(x * 2 - 1).latents).sample / 2 + 0.5).clamp(0, 1))
    ours = _view(gen, z, strength, steps, 20)
    # from the image: the pipeline encodes it itself (AutoencoderTiny has no posterior to sample)
    ref = pipe(prompt="", image=x, strength=strength, num_inference_steps=steps,
               generator=torch.Generator().manual_seed(20), output_type="pt").images
    assert (ours - gen.decode(z)).abs().max() > 0.005  # changed (a random taesd decodes mostly below 0: clamped)
    _close(ours, ref)
