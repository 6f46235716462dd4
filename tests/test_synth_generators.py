"""Generators: the real TAEF2 (strict load, real reconstructions) and a VQModel loaded from disk."""

import numpy as np
import pytest
import torch

from gcl.synth.generators import GeneratorLoadError, load_generator
from gcl.synth.generators.taesd import taef2_decoder, taef2_encoder


def _psnr(a, b):
    return 10 * torch.log10(1 / ((a - b) ** 2).mean()).item()


def test_taef2_architecture_matches_published_counts():
    enc, dec = taef2_encoder(), taef2_decoder()
    assert len(enc.state_dict()) == 79 and len(dec.state_dict()) == 79
    assert abs(sum(p.numel() for p in enc.parameters()) / 1e6 - 1.34) < 0.01


def test_taef2_reconstructs_real_images(taef2_dir, cifar_test_npz):
    gen = load_generator("taesd", str(taef2_dir))
    with np.load(cifar_test_npz) as z:
        x = torch.from_numpy(z["images"][:16]).permute(0, 3, 1, 2).float() / 255
    x64 = torch.nn.functional.interpolate(x, size=64, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.inference_mode():
        latent = gen.encode(x64)
        recon = gen.decode(latent)
    assert latent.shape == (16, 32, 8, 8)
    assert 0.5 < latent.std().item() < 1.2  # README: std about 0.8 on natural images
    assert _psnr(recon, x64) > 28.0  # README: ~32 dB at 64 px; random weights give < 12 dB
    assert gen.downsample == 8 and len(gen.weights_sha256) == 64


def test_taef2_strict_load_rejects_wrong_files(tmp_path, taef2_dir):
    from safetensors.torch import load_file, save_file

    enc = load_file(str(taef2_dir / "taef2_encoder.safetensors"))
    enc.pop("0.bias")
    save_file(enc, str(tmp_path / "taef2_encoder.safetensors"))
    (tmp_path / "taef2_decoder.safetensors").write_bytes((taef2_dir / "taef2_decoder.safetensors").read_bytes())
    with pytest.raises(GeneratorLoadError, match="does not match the TAEF2 architecture"):
        load_generator("taesd", str(tmp_path))


def test_vqgan_from_pretrained_dir_and_token_roundtrip(tiny_vqgan_dir):
    gen = load_generator("vqgan", str(tiny_vqgan_dir))
    assert gen.has_codebook and gen.downsample == 4
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        z = gen.encode(x)
        idx = gen.tokens(z)
        zq = gen.embed(idx)
        assert idx.shape == (2, 8, 8) and zq.shape == z.shape
        assert torch.equal(gen.tokens(zq), idx)  # codebook vectors quantize to themselves
        assert torch.allclose(gen.decode(zq), gen.decode(z), atol=1e-5)  # decode() quantizes


def test_autoencodertiny_dir_loads(tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    latent_channels=4).save_pretrained(tmp_path)
    gen = load_generator("taesd", str(tmp_path))
    with torch.inference_mode():
        out = gen.decode(gen.encode(torch.rand(1, 3, 32, 32)))
    assert gen.downsample == 8 and out.shape == (1, 3, 32, 32) and 0 <= out.min() and out.max() <= 1


def test_hub_id_offline_gives_actionable_error():
    with pytest.raises(GeneratorLoadError, match="--model DIR"):
        load_generator("vqgan", "someone/not-cached-vqgan")
