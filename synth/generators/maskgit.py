"""MaskGIT family (image transformer): masked token resampling on an aMUSEd-layout model.

Tokenise with the VQ-GAN (vqvae/, a diffusers VQModel, in [0, 1] like aMUSEd's pipelines), mask
round(r x L) of the L tokens (positions drawn per image from its own generator), then fill them
back in N steps with the transformer (transformer/, a UVit2DModel) conditioned on the
unconditional ("") text embedding computed once (text_encoder/ + tokenizer/), and decode. The
recipe op is `resample(ratio, steps)`; ratio 0 = the plain VQ reconstruction. Token ops
(vq_replace, vq_swap) and latent ops still work before it: this generator is a VQ-GAN too.

Each step is diffusers' `AmusedScheduler.step` itself (mask token from scheduler/; Gumbel
temperature linspace(2, 0, N), its default; the linear masking schedule that
`AmusedInpaintPipeline` sets) with `starting_mask_ratio` = the masked fraction: the maths of the
inpainting pipeline given those token positions as the mask, all draws from the image's own CPU
generator, so a view never depends on its batch neighbours. (`AmusedImg2ImgPipeline` instead
masks each token with probability cos(pi/2 (N - int(N s)) / N); a ratio names the masked share
directly.) With "" as both prompt and negative prompt, the pipelines' classifier-free guidance
is the plain conditional prediction, so none is run.
"""

from __future__ import annotations

import torch

from gcl.synth.generators.base import from_pretrained_or_explain, read_optional_config, state_dict_sha256
from gcl.synth.generators.vqgan import VQ_SUBFOLDER, VQGANGenerator, load_vq, resolve_pixel_range, vq_description

AESTHETIC_SCORE = 6  # aMUSEd's default micro-conditioning (its pipelines' value)
TEMPERATURE = (2, 0)  # AmusedScheduler.set_timesteps' default Gumbel temperature range
MASKING_SCHEDULE = "linear"  # what AmusedInpaintPipeline registers on the scheduler, whatever its config says


class MaskGITGenerator(VQGANGenerator):
    view_op = "resample"

    def __init__(self, vq, transformer, hidden: torch.Tensor, pooled: torch.Tensor, scheduler_config: dict, **kw):
        super().__init__(vq, **kw)
        self._tf, self._hidden, self._pooled = transformer, hidden, pooled
        self._scheduler_config = scheduler_config
        self._mask_id = int(scheduler_config["mask_token_id"])
        self._schedulers: dict[int, object] = {}

    def scheduler(self, steps: int):
        """An AmusedScheduler set to `steps` steps (one per step count, kept)."""
        if steps not in self._schedulers:
            from diffusers import AmusedScheduler

            sched = AmusedScheduler.from_config(self._scheduler_config)
            sched.set_timesteps(steps, TEMPERATURE, self.device)
            self._schedulers[steps] = sched
        return self._schedulers[steps]

    def _logits(self, idx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, h, w) token ids -> (B, codes, h, w) transformer logits (its dtype, on its device)."""
        b = idx.shape[0]
        micro = torch.tensor([size[1], size[0], 0, 0, AESTHETIC_SCORE], device=self.device, dtype=self._hidden.dtype)
        return self._tf(idx.to(self.device), encoder_hidden_states=self._hidden.expand(b, -1, -1),
                        pooled_text_emb=self._pooled.expand(b, -1), micro_conds=micro.expand(b, -1))

    def sample(self, z: torch.Tensor, params: list, gens: list) -> torch.Tensor:
        idx = self.tokens(z).to(self.device)  # (B, h, w)
        b, h, w = idx.shape
        size = (h * self.downsample, w * self.downsample)
        tokens = idx.clone()
        steps, start_ratio = [0] * b, [None] * b
        for i, p in enumerate(params):
            if p and p["ratio"] > 0:
                n = max(1, int(round(p["ratio"] * h * w)))
                steps[i] = int(p["steps"])
                pos = torch.randperm(h * w, generator=gens[i])[:n].to(self.device)
                tokens[i].view(-1)[pos] = self._mask_id
                start_ratio[i] = torch.tensor(n) / (h * w)  # float32, as the inpainting pipeline computes it
        for k in range(max(steps, default=0)):
            active = [i for i in range(b) if k < steps[i]]
            logits = self._logits(tokens[active], size)
            for row, i in enumerate(active):
                sched = self.scheduler(steps[i])
                tokens[i] = sched.step(logits[row:row + 1], sched.timesteps[k], tokens[i:i + 1],
                                       starting_mask_ratio=start_ratio[i], generator=gens[i]).prev_sample[0]
        return self.decode(self.embed(tokens))


@torch.inference_mode()
def unconditional_text(model: str, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """aMUSEd's conditioning for "": penultimate hidden states and the projected pooled embedding."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    tok = from_pretrained_or_explain(CLIPTokenizer, model, subfolder="tokenizer")
    enc = from_pretrained_or_explain(CLIPTextModelWithProjection, model, subfolder="text_encoder").eval()
    ids = tok("", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    out = enc(ids, output_hidden_states=True)
    return out.hidden_states[-2].to(device, dtype), out.text_embeds.to(device, dtype)


def load(model: str, device: torch.device, dtype: torch.dtype, pixel_range: str = "auto") -> MaskGITGenerator:
    import hashlib

    from diffusers import UVit2DModel

    vq = load_vq(model, device, dtype, subfolder=VQ_SUBFOLDER)
    tf = from_pretrained_or_explain(UVit2DModel, model, subfolder="transformer").eval().to(device, dtype)
    pixel_range = resolve_pixel_range(model, pixel_range, without_index="0-1")  # UVit2DModel: aMUSEd's transformer
    hidden, pooled = unconditional_text(model, device, dtype)
    # aMUSEd's scheduler config names the mask token; without one, the last transformer id is it
    scheduler_config = read_optional_config(model, "scheduler", "scheduler_config.json") or {}
    scheduler_config = {"mask_token_id": int(scheduler_config.get("mask_token_id", int(tf.config.vocab_size) - 1)),
                        "masking_schedule": MASKING_SCHEDULE}
    text_sha = hashlib.sha256(hidden.float().cpu().numpy().tobytes() + pooled.float().cpu().numpy().tobytes()).hexdigest()
    sha = hashlib.sha256((state_dict_sha256(vq, tf) + text_sha).encode()).hexdigest()
    return MaskGITGenerator(
        vq, tf, hidden, pooled, scheduler_config, pixel_range=pixel_range,
        family="maskgit", model_id=str(model), downsample=2 ** (len(vq.config.block_out_channels) - 1), device=device,
        dtype=dtype, weights_sha256=sha, has_codebook=True,
        extra={"arch": f"VQModel + UVit2DModel pixels {pixel_range}", **vq_description(vq, pixel_range),
               "mask_token_id": int(scheduler_config["mask_token_id"]), "masking_schedule": scheduler_config["masking_schedule"],
               "temperature": list(TEMPERATURE)},
    )
