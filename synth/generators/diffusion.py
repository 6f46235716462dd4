"""Diffusion family: SDEdit / img2img views with a lean batched loop over diffusers' DDIMScheduler.

A view noises the image (pixel models) or its latent (latent models) to strength s in [0, 1]
and denoises it again: different noise = a different view with the same layout and new detail.
Layouts, told apart by where the UNet's config lies:
  - pixel diffusion: config.json + scheduler_config.json at the root (google/ddpm-cifar10-32,
    loaded by diffusers with no subfolder) or unet/ + scheduler/ (UNet2DModel);
  - latent diffusion: unet/ (UNet2DConditionModel) + scheduler/ + vae/ (AutoencoderKL, or an
    AutoencoderTiny placed there for 5-20x cheaper encode/decode) + text_encoder/ + tokenizer/
    (Stable Diffusion 1.5/2.1, sd-turbo). The empty-prompt embedding is computed once.

The maths are StableDiffusionImg2ImgPipeline's with a DDIMScheduler built from the model's
scheduler config (its timestep_spacing, steps_offset, set_alpha_to_one, prediction_type,
clip_sample): `sdedit(strength, steps)` runs the last min(int(steps x strength), steps) of the
`steps` DDIM timesteps, after `add_noise` to the first of them; each step is the scheduler's own
`step` (eta 0). Strength 0 = no noise = the plain reconstruction (decode of the encoded image).
Every image has its own noise generator (drawn like the pipeline draws its noise) and its own
timesteps; the UNet sees only the images still denoising at each iteration. With "" as prompt
and negative prompt, classifier-free guidance equals the plain prediction, so none is run.
Known difference: latents of an AutoencoderKL are its posterior mean (deterministic encoding),
where the pipeline samples the posterior. A VAE whose config says `force_upcast` runs in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from gcl.synth.generators.base import (Generator, GeneratorLoadError, channels_last, component_dtype,
                                       from_pretrained_or_explain, read_config, read_optional_config, state_dict_sha256)


class DiffusionGenerator(Generator):
    view_op = "sdedit"

    def __init__(self, unet: nn.Module, scheduler_config: dict, vae: nn.Module | None = None,
                 text_embedding: torch.Tensor | None = None, **kw):
        super().__init__(**kw)
        self._unet, self._vae, self._text = unet, vae, text_embedding
        self._scheduler_config = scheduler_config
        self._schedulers: dict[int, object] = {}
        self._vae_dtype = next(vae.parameters()).dtype if vae is not None else None

    # ---------------------------------------------------------------- autoencoder side
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self._vae is None:
            return channels_last(x.to(self.device, torch.float32)) * 2 - 1  # pixel diffusion: the image in [-1, 1]
        x = channels_last(x.to(self.device, self._vae_dtype)) * 2 - 1
        cfg = self._vae.config
        enc = self._vae.encode(x)
        # AutoencoderKL: the posterior mean, not a sample (encoding stays deterministic)
        z = enc.latent_dist.mean if hasattr(enc, "latent_dist") else enc.latents
        return (z.float() - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device, torch.float32)
        if self._vae is not None:
            cfg = self._vae.config
            z = z / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
            z = self._vae.decode(channels_last(z.to(self._vae_dtype))).sample
        return ((z.float() + 1) / 2).clamp(0, 1)

    # ---------------------------------------------------------------- the SDEdit loop
    def scheduler(self, steps: int):
        """A DDIMScheduler from the model's config, set to `steps` steps (one per step count, kept)."""
        if steps not in self._schedulers:
            from diffusers import DDIMScheduler

            sched = DDIMScheduler.from_config(self._scheduler_config)
            sched.set_timesteps(steps)
            self._schedulers[steps] = sched
        return self._schedulers[steps]

    def timesteps(self, strength: float, steps: int) -> list[int]:
        """Descending timesteps this view runs: StableDiffusionImg2ImgPipeline.get_timesteps."""
        run = min(int(steps * strength), steps)
        return self.scheduler(steps).timesteps[steps - run:].tolist() if run else []

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
                eps = torch.randn((1, *z[i].shape), generator=gens[i]).to(self.device)
                x[i] = self.scheduler(params[i]["steps"]).add_noise(z[i:i + 1], eps, torch.tensor([ts[0]]))[0]
        for j in range(max((len(ts) for ts in plans), default=0)):
            active = [i for i, ts in enumerate(plans) if j < len(ts)]
            t_now = [plans[i][j] for i in active]
            out = self._model(x[active], torch.tensor(t_now, device=self.device))
            for row, i in enumerate(active):
                sched = self.scheduler(params[i]["steps"])
                x[i] = sched.step(out[row:row + 1], t_now[row], x[i:i + 1], eta=0.0).prev_sample[0]
        return self.decode(x)


# ---------------------------------------------------------------- loading


def unet_layout(model: str) -> tuple[str, str, str]:
    """(unet class name, unet subfolder, scheduler subfolder): unet/ + scheduler/, or both configs
    at the root (google/ddpm-cifar10-32's layout)."""
    cfg = read_optional_config(model, "unet")
    if cfg is not None:
        return cfg.get("_class_name"), "unet", "scheduler"
    cfg = read_optional_config(model)
    if cfg is None:
        raise GeneratorLoadError(f"{model} has neither unet/config.json nor config.json: not a diffusers UNet layout")
    if read_optional_config(model, filename="scheduler_config.json") is None:
        raise GeneratorLoadError(f"{model} has config.json but no scheduler_config.json beside it: not the expected model layout")
    return cfg.get("_class_name"), "", ""


def _scheduler_config(model: str, subfolder: str) -> dict:
    from diffusers import DDIMScheduler

    sched = from_pretrained_or_explain(DDIMScheduler, model, subfolder=subfolder or None)  # DDPM/PNDM configs load as DDIM
    if sched.config.thresholding:
        raise GeneratorLoadError(f"the scheduler config of {model} asks for dynamic thresholding, which gcl does not run")
    return dict(sched.config)


def _load_vae(model: str, device, dtype):
    from diffusers import AutoencoderKL, AutoencoderTiny

    cls_name = read_config(model, "vae").get("_class_name", "AutoencoderKL")
    cls = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}.get(cls_name)
    if cls is None:
        raise GeneratorLoadError(f"vae/ of {model} is a {cls_name}; expected AutoencoderKL or AutoencoderTiny")
    vae = from_pretrained_or_explain(cls, model, subfolder="vae").eval()
    vae = vae.to(device, component_dtype(vae.config, dtype), memory_format=torch.channels_last)
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


def schedule_description(cfg: dict) -> dict:
    """The scheduler settings that shape a view, for the manifest."""
    keys = ("prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample", "beta_schedule")
    return {"scheduler": "DDIMScheduler", **{k: cfg.get(k) for k in keys}}


def load(model: str, device: torch.device, dtype: torch.dtype) -> DiffusionGenerator:
    from diffusers import UNet2DConditionModel, UNet2DModel

    kind, unet_dir, scheduler_dir = unet_layout(model)
    if kind not in ("UNet2DModel", "UNet2DConditionModel"):
        raise GeneratorLoadError(f"the UNet of {model} is a {kind}; --generator diffusion needs UNet2DModel or UNet2DConditionModel")
    sched_cfg = _scheduler_config(model, scheduler_dir)
    cls = UNet2DModel if kind == "UNet2DModel" else UNet2DConditionModel
    unet = from_pretrained_or_explain(cls, model, subfolder=unet_dir or None).eval().to(device, dtype, memory_format=torch.channels_last)
    common = dict(family="diffusion", model_id=str(model), device=device, dtype=dtype)
    if cls is UNet2DModel:
        return DiffusionGenerator(unet, sched_cfg, downsample=1, weights_sha256=state_dict_sha256(unet),
                                  extra={"arch": "pixel UNet2DModel", "prediction": sched_cfg["prediction_type"],
                                         **schedule_description(sched_cfg)}, **common)
    vae, down, vae_kind = _load_vae(model, device, dtype)
    text = empty_prompt_embedding(model, device, dtype)
    sha = state_dict_sha256(unet, vae)  # the text encoder only fixes the constant embedding, hashed below
    import hashlib

    sha = hashlib.sha256((sha + hashlib.sha256(text.float().cpu().numpy().tobytes()).hexdigest()).encode()).hexdigest()
    return DiffusionGenerator(unet, sched_cfg, vae=vae, text_embedding=text, downsample=down, weights_sha256=sha,
                              extra={"arch": f"latent UNet2DConditionModel + {vae_kind}", "prediction": sched_cfg["prediction_type"],
                                     "vae_dtype": str(next(vae.parameters()).dtype).removeprefix("torch."),
                                     **schedule_description(sched_cfg)}, **common)
