"""MaskGIT family (image transformer): masked token resampling on an aMUSEd-layout model.

Tokenise with the VQ-GAN (vqvae/, a diffusers VQModel), mask a ratio r of the tokens (positions
drawn per image from its own generator), then fill them back in N confidence-ordered steps with
the transformer (transformer/, a UVit2DModel), conditioned on the unconditional ("") text
embedding computed once (text_encoder/ + tokenizer/), and decode. The recipe op is
`resample(ratio, steps)`; ratio 0 = the plain VQ reconstruction. Token ops (vq_replace,
vq_swap) and latent ops still work before it: this generator is a VQ-GAN too.

Step k of N keeps floor(n cos(pi/2 (k+1)/N)) of the n masked tokens masked (MaskGIT's cosine
schedule): the least confident new tokens, with confidence = log p(token) + Gumbel noise annealed
to zero, all drawn on CPU from the image's generator so views never depend on the device.
"""

from __future__ import annotations

import math

import torch

from gcl.synth.generators.base import from_pretrained_or_explain, state_dict_sha256
from gcl.synth.generators.vqgan import VQ_SUBFOLDER, VQGANGenerator

AESTHETIC_SCORE = 6  # aMUSEd's default micro-conditioning (its pipelines' value)


class MaskGITGenerator(VQGANGenerator):
    view_op = "resample"

    def __init__(self, vq, transformer, hidden: torch.Tensor, pooled: torch.Tensor, mask_id: int, **kw):
        super().__init__(vq, **kw)
        self._tf, self._hidden, self._pooled, self._mask_id = transformer, hidden, pooled, mask_id

    def _logits(self, idx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, h, w) token ids -> (B, h*w, codes) float32 log-probabilities on CPU."""
        b = idx.shape[0]
        micro = torch.tensor([size[1], size[0], 0, 0, AESTHETIC_SCORE], device=self.device, dtype=self.dtype)
        out = self._tf(idx.to(self.device), encoder_hidden_states=self._hidden.expand(b, -1, -1),
                       pooled_text_emb=self._pooled.expand(b, -1), micro_conds=micro.expand(b, -1))
        codes = self.codebook().shape[0]
        out = out.permute(0, 2, 3, 1).reshape(b, -1, out.shape[1])[..., :codes]  # drop the mask token's logit
        return out.float().cpu().log_softmax(-1)

    def sample(self, z: torch.Tensor, params: list, gens: list) -> torch.Tensor:
        idx = self.tokens(z).cpu()  # (B, h, w)
        b, h, w = idx.shape
        size = (h * self.downsample, w * self.downsample)
        flat = idx.reshape(b, h * w).clone()
        masked = torch.zeros_like(flat, dtype=torch.bool)
        n_masked, steps = [0] * b, [0] * b
        for i, p in enumerate(params):
            if p and p["ratio"] > 0:
                n_masked[i] = max(1, int(round(p["ratio"] * h * w)))
                steps[i] = int(p["steps"])
                masked[i, torch.randperm(h * w, generator=gens[i])[: n_masked[i]]] = True
        flat[masked] = self._mask_id
        for k in range(max(steps, default=0)):
            active = [i for i in range(b) if k < steps[i]]
            logp = self._logits(flat[active].view(-1, h, w), size)
            for row, i in enumerate(active):
                self._fill_step(flat[i], masked[i], logp[row], k, steps[i], n_masked[i], gens[i])
        return self.decode(self.embed(flat.view(b, h, w).to(self.device)))

    def _fill_step(self, tokens, masked, logp, k: int, steps: int, n: int, gen) -> None:
        """Sample every masked token, then re-mask the least confident ones (in place)."""
        pos = masked.nonzero().squeeze(1)
        if pos.numel() == 0:
            return
        drawn = torch.multinomial(logp[pos].exp(), 1, generator=gen).squeeze(1)
        remain = int(math.floor(n * math.cos(math.pi / 2 * (k + 1) / steps)))
        gumbel = -torch.log(-torch.log(torch.rand(pos.numel(), generator=gen).clamp_min(1e-20)))
        confidence = logp[pos, drawn] + gumbel * (1 - (k + 1) / steps)
        keep_masked = pos[confidence.argsort()[:remain]] if remain > 0 else pos[:0]
        tokens[pos] = drawn
        masked[pos] = False
        tokens[keep_masked] = self._mask_id
        masked[keep_masked] = True


@torch.inference_mode()
def unconditional_text(model: str, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """aMUSEd's conditioning for "": penultimate hidden states and the projected pooled embedding."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    tok = from_pretrained_or_explain(CLIPTokenizer, model, subfolder="tokenizer")
    enc = from_pretrained_or_explain(CLIPTextModelWithProjection, model, subfolder="text_encoder").eval()
    ids = tok("", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    out = enc(ids, output_hidden_states=True)
    return out.hidden_states[-2].to(device, dtype), out.text_embeds.to(device, dtype)


def load(model: str, device: torch.device, dtype: torch.dtype) -> MaskGITGenerator:
    from diffusers import UVit2DModel, VQModel

    vq = from_pretrained_or_explain(VQModel, model, subfolder=VQ_SUBFOLDER).eval().to(device, dtype)
    tf = from_pretrained_or_explain(UVit2DModel, model, subfolder="transformer").eval().to(device, dtype)
    hidden, pooled = unconditional_text(model, device, dtype)
    import hashlib

    text_sha = hashlib.sha256(hidden.float().cpu().numpy().tobytes() + pooled.float().cpu().numpy().tobytes()).hexdigest()
    sha = hashlib.sha256((state_dict_sha256(vq, tf) + text_sha).encode()).hexdigest()
    return MaskGITGenerator(
        vq, tf, hidden, pooled, mask_id=int(tf.config.vocab_size) - 1,  # aMUSEd: the last id is the mask token
        family="maskgit", model_id=str(model), downsample=2 ** (len(vq.config.block_out_channels) - 1), device=device,
        dtype=dtype, weights_sha256=sha, has_codebook=True,
        extra={"arch": "VQModel + UVit2DModel", "num_codes": int(vq.config.num_vq_embeddings)},
    )
