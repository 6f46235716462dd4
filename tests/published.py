"""Models built from published configs (tests/fixtures/published/*.json), random weights.

Each fixture holds a published repository's config files verbatim ("files") and the few values
shrunk to make it cheap on CPU ("shrink"): widths, depths and the sizes that follow from them
(codebook size, mask token id, text width), never a convention flag (pixel range, scaling,
prediction type, timestep spacing, upcasting, normalisation). `build` writes the repository's
layout with save_pretrained, so gcl loads it the way it loads the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "published"
# The only keys a fixture may shrink: sizes, not conventions.
SHRINKABLE = {
    "block_out_channels", "layers_per_block", "norm_num_groups", "latent_channels", "num_vq_embeddings",
    "encoder_block_out_channels", "decoder_block_out_channels", "num_encoder_blocks", "num_decoder_blocks",
    "cross_attention_dim", "attention_head_dim", "hidden_size", "intermediate_size", "num_attention_heads",
    "num_hidden_layers", "projection_dim", "block_num_heads", "codebook_size", "cond_embed_dim", "encoder_hidden_size",
    "in_channels", "micro_cond_embed_dim", "micro_cond_encode_dim", "num_res_blocks", "vocab_size", "mask_token_id",
    "decoder_hidden_size", "decoder_intermediate_size", "decoder_num_attention_heads", "decoder_num_hidden_layers",
}
COPIED_AS_IS = ("model_index.json", "scheduler_config.json", "preprocessor_config.json")


def fixture(name: str) -> dict:
    spec = json.loads((FIXTURES / f"{name}.json").read_text())
    for rel, values in spec.get("shrink", {}).items():
        assert rel in spec["files"], f"{name}: shrinks {rel}, which the fixture does not have"
        bad = set(values) - SHRINKABLE
        assert not bad, f"{name}: {rel} shrinks {sorted(bad)}: only widths and depths may change"
    return spec


def shrunk_config(name: str, rel: str) -> dict:
    spec = fixture(name)
    return {**spec["files"][rel], **spec.get("shrink", {}).get(rel, {})}


def build(name: str, root: Path, seed: int = 0, overrides: dict | None = None) -> Path:
    """Write fixture `name` as a model directory under `root` (random weights, seeded)."""
    spec = fixture(name)
    root.mkdir(parents=True, exist_ok=True)
    for k, rel in enumerate(sorted(spec["files"])):
        cfg = {**spec["files"][rel], **spec.get("shrink", {}).get(rel, {}), **(overrides or {}).get(rel, {})}
        folder = (root / rel).parent
        folder.mkdir(parents=True, exist_ok=True)
        if Path(rel).name in COPIED_AS_IS:
            (root / rel).write_text(json.dumps(cfg, indent=1))
            continue
        torch.manual_seed(seed + k)
        _model(cfg).save_pretrained(folder)
    if (root / "text_encoder").is_dir():
        tiny_clip_tokenizer(root / "tokenizer")
    return root


def _model(cfg: dict):
    if "_class_name" in cfg:  # a diffusers component
        import diffusers

        return getattr(diffusers, cfg["_class_name"]).from_config(cfg).eval()
    import transformers

    cls = getattr(transformers, cfg["architectures"][0])
    return cls(cls.config_class.from_dict(cfg)).eval()


def tiny_clip_tokenizer(path: Path, max_length: int = 77) -> None:
    """A 4-token CLIP tokenizer (the empty prompt only needs start, end and padding)."""
    from transformers import CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(path)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] image batches (inf when equal)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float [0, 1] low-frequency colour fields (photo-like, not white noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(small, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
