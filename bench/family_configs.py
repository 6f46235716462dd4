"""Random-init models of every generator family, saved in their real layouts, for benchmarks.

full=True builds the published sizes (TAEF2, SD-2.1 UNet with a tiny autoencoder, aMUSEd-256
transformer + VQ-GAN, ViT-MAE base, Real-ESRGAN x4plus, the aMUSEd VQ-GAN); full=False builds
toy sizes that run in seconds on a CPU (`--smoke`). Text encoders are small in both: they run
once per process (the empty-prompt embedding) and only their output width must match.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _clip(root: Path, width: int, projection: bool) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    cfg = CLIPTextConfig(vocab_size=4, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=8, projection_dim=width)
    (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).save_pretrained(root / "text_encoder")
    tok = root / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    (tok / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab_file=str(tok / "vocab.json"), merges_file=str(tok / "merges.txt"), model_max_length=8).save_pretrained(tok)


def _vq(full: bool):
    from diffusers import VQModel

    if full:  # aMUSEd's f16 VQ-GAN (8192 codes)
        return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
                       up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(128, 256, 256, 512, 768),
                       layers_per_block=2, latent_channels=64, num_vq_embeddings=8192, vq_embed_dim=64,
                       norm_num_groups=32, mid_block_add_attention=False, lookup_from_codebook=True, force_upcast=False)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                   up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
                   latent_channels=8, norm_num_groups=8, num_vq_embeddings=64, vq_embed_dim=8)


def build_vqgan(root: Path, full: bool) -> Path:
    _vq(full).save_pretrained(root)
    return root


def build_diffusion(root: Path, full: bool) -> Path:
    from diffusers import AutoencoderTiny, DDIMScheduler, UNet2DConditionModel

    if full:  # Stable Diffusion 2.1's UNet (865 M parameters), v-prediction, with TAESD as vae/
        unet = UNet2DConditionModel(sample_size=96, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                                    layers_per_block=2, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True)
        vae, width = AutoencoderTiny(), 1024
    else:
        unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                    attention_head_dim=2, norm_num_groups=8)
        vae, width = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4), 16
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction").save_pretrained(root / "scheduler")
    _clip(root, width, projection=False)
    return root


def build_maskgit(root: Path, full: bool) -> Path:
    from diffusers import UVit2DModel

    _vq(full).save_pretrained(root / "vqvae")
    if full:  # aMUSEd-256's transformer (UVit2DModel defaults: 1024 hidden, 22 layers, 8192 codes)
        UVit2DModel().save_pretrained(root / "transformer")
        _clip(root, 768, projection=True)
    else:
        UVit2DModel(hidden_size=32, cond_embed_dim=16, micro_cond_encode_dim=4, micro_cond_embed_dim=20,
                    encoder_hidden_size=16, vocab_size=65, codebook_size=64, in_channels=16, block_out_channels=32,
                    num_res_blocks=1, block_num_heads=2, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32).save_pretrained(root / "transformer")
        _clip(root, 16, projection=True)
    return root


def build_mae(root: Path, full: bool) -> Path:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    cfg = ViTMAEConfig() if full else ViTMAEConfig(  # ViTMAEConfig() is ViT-MAE base (patch 16, 224 px)
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)
    ViTMAEForPreTraining(cfg).save_pretrained(root)
    return root


def build_taesd(root: Path, full: bool) -> Path:
    """TAEF2's own architecture in its file layout (it is small: the same at both sizes)."""
    from safetensors.torch import save_file

    from gcl.synth.generators.taesd import TAEF2_FILES, taef2_decoder, taef2_encoder

    root.mkdir(parents=True, exist_ok=True)
    for net, name in ((taef2_encoder(), TAEF2_FILES[0]), (taef2_decoder(), TAEF2_FILES[1])):
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / name))
    return root


def build_esrgan(root: Path, full: bool) -> Path:
    from safetensors.torch import save_file

    from gcl.synth.generators.esrgan import ESRGAN_FILE, RRDBNet

    net = RRDBNet(blocks=23 if full else 2)
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / ESRGAN_FILE))
    return root


BUILDERS = {"taesd": build_taesd, "diffusion": build_diffusion, "maskgit": build_maskgit, "mae": build_mae, "esrgan": build_esrgan,
            "vqgan": build_vqgan}


def build(family: str, root: Path, full: bool) -> Path:
    torch.manual_seed(0)
    return BUILDERS[family](Path(root), full)
