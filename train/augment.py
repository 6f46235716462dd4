"""Handcrafted augmenter built from solo-learn's augmentation fields (one AugConfig per view).

Works on PIL images (fast for 32-64 px) and returns a uint8 CHW tensor: uint8 crosses the worker
boundary at a quarter of float32's size; normalisation happens on the device (methods/base.py).
"""

from __future__ import annotations

import torch
from PIL import ImageFilter
from torchvision.transforms import v2

from gcl.train.config import AugConfig


def build_augmenter(cfg: AugConfig) -> v2.Compose:
    ops = [
        # antialias: downscaling 64 px shards to 32 px crops must not alias
        v2.RandomResizedCrop(cfg.crop_size, scale=(cfg.min_scale, cfg.max_scale), antialias=True),
    ]
    if cfg.color_jitter_prob > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                                  p=cfg.color_jitter_prob))
    if cfg.gray_scale_prob > 0:
        ops.append(v2.RandomGrayscale(p=cfg.gray_scale_prob))
    if cfg.gaussian_prob > 0:
        ops.append(PILGaussianBlur(cfg.gaussian_prob))
    if cfg.solarization_prob > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=cfg.solarization_prob))  # uint8 midpoint
    if cfg.equalization_prob > 0:
        ops.append(v2.RandomEqualize(p=cfg.equalization_prob))
    if cfg.horizontal_flip_prob > 0:
        ops.append(v2.RandomHorizontalFlip(p=cfg.horizontal_flip_prob))
    ops.append(v2.PILToTensor())
    return v2.Compose(ops)


class PILGaussianBlur:
    """Blur with sigma ~ U(0.1, 2) as in BYOL / solo-learn; PIL's filter is ~50x faster than the
    tensor GaussianBlur on 32 px images. Randomness comes from torch's generator, which the
    loader seeds per worker, so runs repeat."""

    def __init__(self, p: float, sigma: tuple[float, float] = (0.1, 2.0)):
        self.p, self.sigma = p, sigma

    def __call__(self, img):
        if torch.rand(()) >= self.p:
            return img
        s = self.sigma[0] + float(torch.rand(())) * (self.sigma[1] - self.sigma[0])
        return img.filter(ImageFilter.GaussianBlur(radius=s))


class ViewAugmenter:
    """Applies augmentation i (mod the number given) to the i-th chosen view of a family."""

    def __init__(self, cfgs: list[AugConfig]):
        self.transforms = [build_augmenter(c) for c in cfgs]

    def __call__(self, images: list) -> torch.Tensor:
        """PIL images -> (V, 3, H, W) uint8."""
        return torch.stack([self.transforms[i % len(self.transforms)](im) for i, im in enumerate(images)])
