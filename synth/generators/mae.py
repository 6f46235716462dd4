"""MAE family (image transformer): masked-autoencoder reconstruction with
transformers.ViTMAEForPreTraining.

encode = the image normalised like the model's image processor (preprocessor_config.json, else
ImageNet statistics); the latent ops act on it. `remask(ratio)` hides that ratio of patches
(which ones: per-image noise from the image's own generator, passed as ViTMAE's `noise=`), the
model predicts them, the visible patches are pasted back, and the pixel normalisation is undone.
Ratio 0 (or a skipped op) shows every patch: the view is the input itself (no model call, which
also avoids ViTMAE's NaN loss at mask ratio 0). Images of a batch with the same number of kept
patches run together (ViTMAE keeps one count per call).
"""

from __future__ import annotations

import torch

from gcl.synth.generators.base import Generator, from_pretrained_or_explain, read_config, state_dict_sha256

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ViTMAE's processor defaults
NORM_PIX_EPS = 1e-6  # the eps of ViTMAE's per-patch target normalisation


class MAEGenerator(Generator):
    view_op = "remask"

    def __init__(self, mae, mean, std, **kw):
        super().__init__(**kw)
        self._mae = mae
        self._mean = torch.tensor(mean, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self._patch = int(mae.config.patch_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.device, self.dtype) - self._mean) / self._std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z.to(self.device, self.dtype) * self._std + self._mean).float().clamp(0, 1)

    def sample(self, z: torch.Tensor, params: list, gens: list) -> torch.Tensor:
        z = z.to(self.device, self.dtype)
        b, _, h, w = z.shape
        n = (h // self._patch) * (w // self._patch)
        keep = [n if not p else min(n, max(1, n - int(round(p["ratio"] * n)))) for p in params]
        noise = torch.stack([torch.rand(n, generator=g) for g in gens]).to(self.device)
        out = z.clone()
        for k in sorted(set(keep) - {n}):
            rows = [i for i in range(b) if keep[i] == k]
            out[rows] = self._reconstruct(z[rows], noise[rows], k, n)
        return self.decode(out)

    def _reconstruct(self, z: torch.Tensor, noise: torch.Tensor, keep: int, n: int) -> torch.Tensor:
        cfg = self._mae.config
        size = tuple(z.shape[-2:])
        published = cfg.mask_ratio
        cfg.mask_ratio = (n - keep - 0.5) / n  # ViTMAE keeps int(n (1 - ratio)) = keep patches
        try:
            res = self._mae(z, noise=noise, interpolate_pos_encoding=size != (cfg.image_size, cfg.image_size))
        finally:  # the loaded model keeps its published mask ratio
            cfg.mask_ratio = published
        pred = res.logits
        if cfg.norm_pix_loss:  # predictions are per-patch normalised: undo with the input patches' statistics
            target = self._mae.patchify(z, interpolate_pos_encoding=True)
            pred = pred * (target.var(-1, keepdim=True) + NORM_PIX_EPS) ** 0.5 + target.mean(-1, keepdim=True)
        pred = self._mae.unpatchify(pred, original_image_size=size)
        mask = res.mask.view(-1, 1, size[0] // self._patch, size[1] // self._patch).to(z.dtype)
        mask = mask.repeat_interleave(self._patch, 2).repeat_interleave(self._patch, 3)
        return mask * pred + (1 - mask) * z  # the visible patches pasted back


def _normalisation(model: str) -> tuple[tuple, tuple]:
    try:
        cfg = read_config(model, filename="preprocessor_config.json")
    except Exception:  # noqa: BLE001 - no processor file: the processor's own defaults apply
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))


def load(model: str, device: torch.device, dtype: torch.dtype) -> MAEGenerator:
    from transformers import ViTMAEForPreTraining

    mae = from_pretrained_or_explain(ViTMAEForPreTraining, model).eval().to(device, dtype)
    mean, std = _normalisation(model)
    return MAEGenerator(mae, mean, std, family="mae", model_id=str(model), downsample=int(mae.config.patch_size),
                        device=device, dtype=dtype, weights_sha256=state_dict_sha256(mae),
                        extra={"arch": "ViTMAEForPreTraining", "norm_pix_loss": bool(mae.config.norm_pix_loss)})
