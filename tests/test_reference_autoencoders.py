"""taesd and vqgan against diffusers' own encode/decode, on models built from published configs
(widths shrunk, random weights): the reconstruction (strength 0) and the decode of a perturbed
latent (what every latent op feeds the decoder) equal the reference's, in the reference's pixel
range: AutoencoderTiny in [-1, 1]; aMUSEd's VQ-GAN in [0, 1] (its pipelines: do_normalize=False,
.sample.clip(0, 1)); a bare taming/LDM VQModel in [-1, 1] (LDMPipeline: image / 2 + 0.5)."""

from __future__ import annotations

import pytest
import torch

from gcl.synth.generators import GeneratorLoadError, load_generator
from published import build, psnr, smooth_images

SIZE = 64
TOL = 1e-4  # fp32 on CPU: the same maths; channels_last convolutions sum in another order (~1e-5)


def _close(ours, ref):
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= TOL, f"max diff {diff:.2e}, PSNR {psnr(ours, ref):.1f} dB"


def _perturbed(z: torch.Tensor) -> torch.Tensor:
    """A mid-strength latent op: noise at half the latent's std (noise(strength=0.5))."""
    return z + 0.5 * z.std() * torch.randn(z.shape, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {name: build(name, root / name) for name in ("taesd", "amused-256", "ldm-celebahq-256-vqvae")}


def _same_views(gen, ref, to_model, to_pixels):
    """gcl's latents, reconstruction and view of a perturbed latent equal the library model's, with
    the model's own pixel mapping (to_model: [0,1] -> its input range; to_pixels: its output -> [0,1])."""
    x = smooth_images(2, SIZE)
    z = gen.encode(x)
    _close(z, ref.encode(to_model(x)).latents)
    _close(gen.decode(z), to_pixels(ref.decode(ref.encode(to_model(x)).latents).sample))
    zp = _perturbed(z)
    _close(gen.decode(zp), to_pixels(ref.decode(zp).sample))


def _same_views_in_signed_range(gen, ref):
    _same_views(gen, ref, to_model=lambda x: x * 2 - 1, to_pixels=lambda y: (y / 2 + 0.5).clamp(0, 1))


@torch.inference_mode()
def test_taesd_is_autoencoder_tiny(models):
    from diffusers import AutoencoderTiny

    gen = load_generator("taesd", str(models["taesd"]))
    ref = AutoencoderTiny.from_pretrained(models["taesd"]).eval()
    _same_views_in_signed_range(gen, ref)


@torch.inference_mode()
@pytest.mark.parametrize("subpath", ["", "vqvae"])
def test_amused_vqgan_works_in_unit_range(models, subpath):
    """DIR in aMUSEd's layout (model_index.json + vqvae/), or its vqvae/ folder itself."""
    from diffusers import VQModel

    gen = load_generator("vqgan", str(models["amused-256"] / subpath))
    assert gen.extra["pixel_range"] == "0-1" and gen.downsample == 16
    ref = VQModel.from_pretrained(models["amused-256"] / "vqvae").eval()
    _same_views(gen, ref, to_model=lambda x: x, to_pixels=lambda y: y.clip(0, 1))


@torch.inference_mode()
def test_bare_vqmodel_works_in_signed_range(models):
    from diffusers import VQModel

    gen = load_generator("vqgan", str(models["ldm-celebahq-256-vqvae"]))
    assert gen.extra["pixel_range"] == "-1-1" and gen.downsample == 4
    ref = VQModel.from_pretrained(models["ldm-celebahq-256-vqvae"]).eval()
    _same_views_in_signed_range(gen, ref)


def test_pixel_range_option(models):
    """The user's statement wins over the layout, is part of the generator id, and only applies to VQ-GANs."""
    gen = load_generator("vqgan", str(models["ldm-celebahq-256-vqvae"]), pixel_range="0-1")
    assert gen.extra["pixel_range"] == "0-1" and gen.id == "vqgan:VQModel pixels 0-1"
    with pytest.raises(GeneratorLoadError, match="--pixel-range"):
        load_generator("taesd", str(models["taesd"]), pixel_range="0-1")
