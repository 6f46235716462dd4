"""Diffusion family: SDEdit / img2img views with a lean batched DDIM loop (no pipelines).

A view noises the image (pixel models) or its latent (latent models) to strength s in [0, 1]
and denoises it again: different noise = a different view with the same layout and new detail.
Two layouts, told apart by unet/config.json:
  - pixel diffusion: unet/ (UNet2DModel) + scheduler/ (e.g. google/ddpm-cifar10-32);
  - latent diffusion: unet/ (UNet2DConditionModel) + scheduler/ + vae/ (AutoencoderKL, or an
    AutoencoderTiny placed there for 5-20x cheaper encode/decode) + text_encoder/ + tokenizer/
    (Stable Diffusion 1.5/2.1, sd-turbo). The empty-prompt embedding is computed once.

Per view the recipe draws `sdedit(strength, steps)`: `steps` is the DDIM step count over the
whole schedule ("trailing" spacing: step 1 starts at the last timestep, as sd-turbo expects) and
the view runs the last round(strength x steps) of them. Strength 0 = no noise = the plain
reconstruction (decode of the encoded image). Every image has its own noise generator and its
own timesteps; the UNet sees only the images still denoising at each iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from gcl.synth.generators.base import (Generator, GeneratorLoadError, channels_last, from_pretrained_or_explain,
                                       read_config, state_dict_sha256)


class DiffusionGenerator(Generator):
    view_op = "sdedit"

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str, clip_sample: bool,
                 vae: nn.Module | None = None, text_embedding: torch.Tensor | None = None, **kw):
        super().__init__(**kw)
        self._unet, self._vae, self._text = unet, vae, text_embedding
        self._alphas = alphas_cumprod.double()  # schedule arithmetic in fp64: exact on any device
        self._prediction, self._clip = prediction_type, clip_sample
        self._num_train = len(alphas_cumprod)

    # ---------------------------------------------------------------- autoencoder side
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_last(x.to(self.device, self.dtype)) * 2 - 1
        if self._vae is None:
            return x  # pixel diffusion: the "latent" is the image in [-1, 1]
        cfg = self._vae.config
        enc = self._vae.encode(x)
        # AutoencoderKL: the posterior mean, not a sample (encoding stays deterministic)
        z = enc.latent_dist.mean if hasattr(enc, "latent_dist") else enc.latents
        return (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device, self.dtype)
        if self._vae is not None:
            cfg = self._vae.config
            z = self._vae.decode(channels_last(z / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0))).sample
        return ((z.float() + 1) / 2).clamp(0, 1)

    # ---------------------------------------------------------------- the SDEdit loop
    def timesteps(self, strength: float, steps: int) -> list[int]:
        """Descending timesteps this view runs: the last round(strength x steps) of a trailing
        `steps`-step schedule."""
        run = int(round(strength * steps))
        if strength > 0:
            run = max(run, 1)
        stride = self._num_train / steps
        full = [int(round(self._num_train - k * stride)) - 1 for k in range(steps)]
        return full[steps - run:] if run else []

    def _alpha(self, t: int) -> float:
        return 1.0 if t < 0 else float(self._alphas[t])  # below t=0: the clean image (alpha 1)

    def _model(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = channels_last(x.to(self.dtype))
        if self._text is None:
            return self._unet(x, t).sample.float()
        text = self._text.expand(x.shape[0], -1, -1)
        return self._unet(x, t, encoder_hidden_states=text).sample.float()

    def sample(self, z: torch.Tensor, params: list, gens: list) -> torch.Tensor:
        z = z.to(self.device, torch.float32)
        plans = [self.timesteps(p["strength"], p["steps"]) if p else [] for p in params]
        x = z.clone()
        for i, ts in enumerate(plans):
            if ts:  # forward-noise to the first timestep with this image's own generator
                eps = torch.randn(z[i].shape, generator=gens[i]).to(self.device)
                a = self._alpha(ts[0])
                x[i] = a ** 0.5 * z[i] + (1 - a) ** 0.5 * eps
        stride = [self._num_train / p["steps"] if p else 0 for p in params]
        for j in range(max((len(ts) for ts in plans), default=0)):
            active = [i for i, ts in enumerate(plans) if j < len(ts)]
            t_now = [plans[i][j] for i in active]
            out = self._model(x[active], torch.tensor(t_now, device=self.device))
            for row, i in enumerate(active):
                x[i] = self._ddim_step(x[i], out[row], t_now[row], int(round(t_now[row] - stride[i])))
        return self.decode(x)

    def _ddim_step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """Deterministic DDIM (eta 0) from t to t_prev for epsilon / v / sample predictions."""
        a, a_prev = self._alpha(t), self._alpha(t_prev)
        if self._prediction == "epsilon":
            eps, x0 = out, (x - (1 - a) ** 0.5 * out) / a ** 0.5
        elif self._prediction == "v_prediction":
            x0, eps = a ** 0.5 * x - (1 - a) ** 0.5 * out, a ** 0.5 * out + (1 - a) ** 0.5 * x
        else:  # "sample"
            x0, eps = out, (x - a ** 0.5 * out) / (1 - a) ** 0.5
        if self._clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


# ---------------------------------------------------------------- loading


def _schedule(model: str):
    from diffusers import DDIMScheduler

    sched = from_pretrained_or_explain(DDIMScheduler, model, subfolder="scheduler")  # DDPM configs load as DDIM
    return sched.alphas_cumprod.clone(), sched.config.prediction_type, bool(sched.config.clip_sample)


def _load_vae(model: str, device, dtype):
    from diffusers import AutoencoderKL, AutoencoderTiny

    cls_name = read_config(model, "vae").get("_class_name", "AutoencoderKL")
    cls = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}.get(cls_name)
    if cls is None:
        raise GeneratorLoadError(f"vae/ of {model} is a {cls_name}; expected AutoencoderKL or AutoencoderTiny")
    vae = from_pretrained_or_explain(cls, model, subfolder="vae").eval().to(device, dtype, memory_format=torch.channels_last)
    if cls is AutoencoderKL:
        return vae, 2 ** (len(vae.config.block_out_channels) - 1), cls_name
    down = 2 ** sum(1 for m in vae.encoder.layers if isinstance(m, nn.Conv2d) and m.stride[0] == 2)
    return vae, down, cls_name


@torch.inference_mode()
def empty_prompt_embedding(model: str, device, dtype) -> torch.Tensor:
    """The text encoder's last hidden state for "" (padded like the SD pipelines do), once."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = from_pretrained_or_explain(CLIPTokenizer, model, subfolder="tokenizer")
    enc = from_pretrained_or_explain(CLIPTextModel, model, subfolder="text_encoder").eval()
    ids = tok("", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return enc(ids)[0].to(device, dtype)


def load(model: str, device: torch.device, dtype: torch.dtype) -> DiffusionGenerator:
    from diffusers import UNet2DConditionModel, UNet2DModel

    kind = read_config(model, "unet").get("_class_name")
    if kind not in ("UNet2DModel", "UNet2DConditionModel"):
        raise GeneratorLoadError(f"unet/ of {model} is a {kind}; --generator diffusion needs UNet2DModel or UNet2DConditionModel")
    alphas, prediction, clip = _schedule(model)
    cls = UNet2DModel if kind == "UNet2DModel" else UNet2DConditionModel
    unet = from_pretrained_or_explain(cls, model, subfolder="unet").eval().to(device, dtype, memory_format=torch.channels_last)
    common = dict(family="diffusion", model_id=str(model), device=device, dtype=dtype)
    if cls is UNet2DModel:
        return DiffusionGenerator(unet, alphas, prediction, clip, downsample=1, weights_sha256=state_dict_sha256(unet),
                                  extra={"arch": "pixel UNet2DModel", "prediction": prediction}, **common)
    vae, down, vae_kind = _load_vae(model, device, dtype)
    text = empty_prompt_embedding(model, device, dtype)
    sha = state_dict_sha256(unet, vae)  # the text encoder only fixes the constant embedding, hashed below
    import hashlib

    sha = hashlib.sha256((sha + hashlib.sha256(text.float().cpu().numpy().tobytes()).hexdigest()).encode()).hexdigest()
    return DiffusionGenerator(unet, alphas, prediction, clip, vae=vae, text_embedding=text, downsample=down,
                              weights_sha256=sha, extra={"arch": f"latent UNet2DConditionModel + {vae_kind}",
                                                         "prediction": prediction}, **common)
