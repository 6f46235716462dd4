"""Diffusion family (SDEdit) through its real loader, on tiny random models saved with save_pretrained."""

from __future__ import annotations

import json

import pytest
import torch

import family_checks as fc
from gcl.synth.generators import GeneratorLoadError, load_generator

SDEDIT = "sdedit(strength={s}, steps=4)"  # few steps: the checks hold at any count


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory):
    """google/ddpm-cifar10-32 layout: unet/ (UNet2DModel) + scheduler/ (DDPM)."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ddpm")
    UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=8, attention_head_dim=4).save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=100, clip_sample=True).save_pretrained(root / "scheduler")
    return root


def _tiny_tokenizer(path):
    from transformers import CLIPTokenizer

    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"), model_max_length=8)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory):
    """Stable Diffusion layout with an AutoencoderTiny as vae/ (the cheap variant)."""
    from diffusers import AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ldm")
    UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=2, norm_num_groups=8).save_pretrained(root / "unet")
    DDIMScheduler(num_train_timesteps=100, prediction_type="v_prediction").save_pretrained(root / "scheduler")
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    latent_channels=4).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=8)).save_pretrained(root / "text_encoder")
    _tiny_tokenizer(root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def pixel_gen(pixel_dir):
    return load_generator("diffusion", str(pixel_dir))


@pytest.fixture(scope="module")
def latent_gen(latent_dir):
    return load_generator("diffusion", str(latent_dir))


CHECKS = fc.FAMILY_CHECKS  # the four properties, run for every family


@pytest.mark.parametrize("check", list(CHECKS))
def test_pixel_diffusion_views(pixel_gen, check):
    assert pixel_gen.downsample == 1 and pixel_gen.view_op == "sdedit"
    CHECKS[check](pixel_gen, SDEDIT, 16)


@pytest.mark.parametrize("check", list(CHECKS))
def test_latent_diffusion_views(latent_gen, check):
    assert latent_gen.downsample == 8 and "AutoencoderTiny" in latent_gen.extra["arch"]
    CHECKS[check](latent_gen, SDEDIT, 32)


def test_timesteps_follow_strength_and_steps(pixel_gen):
    """StableDiffusionImg2ImgPipeline.get_timesteps on the config's DDIM schedule (a DDPM config:
    leading spacing, steps_offset 0): the last int(steps x strength) of the `steps` timesteps."""
    assert pixel_gen.timesteps(0.0, 10) == []
    assert pixel_gen.timesteps(1.0, 10) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert pixel_gen.timesteps(0.3, 10) == [20, 10, 0]
    assert pixel_gen.timesteps(0.01, 10) == []  # int(0.1) = 0 steps: the pipeline runs none either
    assert pixel_gen.extra["timestep_spacing"] == "leading" and pixel_gen.extra["set_alpha_to_one"] is True


def test_latent_ops_run_before_noising(latent_gen):
    imgs = fc.images(2, 32)
    plain, _ = fc.views(latent_gen, imgs, "sdedit(strength={s}, steps=10)", 0.0)
    masked, recs = fc.views(latent_gen, imgs, "mask(ratio=0.5); sdedit(strength={s}, steps=10)", 0.0)
    assert [o["op"] for o in recs[0][0]["ops"]] == ["mask", "sdedit"]
    assert not (plain == masked).all()


def test_wrong_layout_is_one_line_error(tmp_path, pixel_dir):
    with pytest.raises(GeneratorLoadError, match="config.json"):
        load_generator("diffusion", str(tmp_path))
    with pytest.raises(GeneratorLoadError, match="--model DIR"):
        load_generator("diffusion", None)
    with pytest.raises(GeneratorLoadError, match="--model DIR"):
        load_generator("diffusion", "someone/not-cached-diffusion")
