"""Image-transformer families (maskgit, mae) through their real loaders, on tiny random models
saved with save_pretrained (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import family_checks as fc
from gcl.synth.generators import load_generator

RESAMPLE = "resample(ratio={s}, steps=3)"
REMASK = "remask(ratio={s})"
CHECKS = fc.FAMILY_CHECKS  # the four properties, run for every family


def _tiny_clip(root):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, max_position_embeddings=8, projection_dim=16)
                                ).save_pretrained(root / "text_encoder")
    tok = root / "tokenizer"
    tok.mkdir()
    (tok / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab_file=str(tok / "vocab.json"), merges_file=str(tok / "merges.txt"), model_max_length=8).save_pretrained(tok)


@pytest.fixture(scope="module")
def maskgit_gen(tmp_path_factory):
    """aMUSEd layout: vqvae/ (VQModel, 64 codes, f4), transformer/ (UVit2DModel), text_encoder/, tokenizer/."""
    from diffusers import UVit2DModel, VQModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("amused")
    VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
            latent_channels=8, norm_num_groups=8, num_vq_embeddings=64, vq_embed_dim=8).save_pretrained(root / "vqvae")
    UVit2DModel(hidden_size=32, cond_embed_dim=16, micro_cond_encode_dim=4, micro_cond_embed_dim=20,
                encoder_hidden_size=16, vocab_size=65, codebook_size=64, in_channels=16, block_out_channels=32,
                num_res_blocks=1, block_num_heads=2, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32).save_pretrained(root / "transformer")
    _tiny_clip(root)
    return load_generator("maskgit", str(root))


@pytest.fixture(scope="module")
def mae_gen(tmp_path_factory):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("mae")
    ViTMAEForPreTraining(ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64, decoder_hidden_size=16,
                                      decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                      decoder_intermediate_size=32, norm_pix_loss=True)).save_pretrained(root)
    return load_generator("mae", str(root))


@pytest.mark.parametrize("check", list(CHECKS))
def test_maskgit_views(maskgit_gen, check):
    assert maskgit_gen.view_op == "resample" and maskgit_gen.has_codebook and maskgit_gen.downsample == 4
    CHECKS[check](maskgit_gen, RESAMPLE, 32)


@pytest.mark.parametrize("check", list(CHECKS))
def test_mae_views(mae_gen, check):
    assert mae_gen.view_op == "remask" and mae_gen.downsample == 8
    CHECKS[check](mae_gen, REMASK, 32)


def test_maskgit_changes_only_masked_tokens(maskgit_gen, monkeypatch):
    """Only the round(ratio x L) masked positions are redrawn: the tokens handed to the decoder
    equal the input's everywhere else."""
    imgs = fc.images(2, 32)
    handed = {}
    embed = maskgit_gen.embed

    def recording_embed(idx):
        handed["idx"] = idx.clone()
        return embed(idx)

    monkeypatch.setattr(maskgit_gen, "embed", recording_embed)
    with torch.inference_mode():
        z = maskgit_gen.encode(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255)
        before = maskgit_gen.tokens(z)
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        out = maskgit_gen.sample(z, [{"ratio": 0.25, "steps": 2}] * 2, gens)
    assert out.shape == (2, 3, 32, 32)
    changed = (handed["idx"].cpu() != before.cpu()).flatten(1).sum(1)
    assert (changed <= 16).all() and changed.sum() > 0, changed  # 8 x 8 tokens, 16 masked per image


def test_mae_visible_patches_are_the_input(mae_gen):
    """Patches the model saw are pasted back: at ratio 0.5 about half the patches equal the input."""
    imgs = fc.images(1, 32)
    v, _ = fc.views(mae_gen, imgs, REMASK, 0.5, k=1)
    same = [np.array_equal(v[0, 0, r:r + 8, c:c + 8], imgs[0][r:r + 8, c:c + 8]) for r in range(0, 32, 8) for c in range(0, 32, 8)]
    assert sum(same) == 16 - 8  # 16 patches, round(0.5 x 16) = 8 hidden and re-imagined
