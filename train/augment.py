"""Handcrafted augmentation on whole uint8 batches, drawn per sample, in the training process.

The loader workers only decode; this runs where the model runs (CPU or GPU), one batched call per
op, so a GPU is never starved by per-image PIL work and 2 CPU cores spend no time on PIL.
Ops and their order follow solo-learn's pipeline, driven by the same AugConfig fields:

  RandomResizedCrop -> colour jitter (p) -> grayscale (p) -> Gaussian blur (p) -> solarization (p)
  -> equalization (p) -> horizontal flip (p)

Colour jitter applies brightness, contrast, saturation, hue in that fixed order (as kornia and
solo-learn's GPU pipeline do) rather than torchvision's random order per image; hue is a rotation
in YIQ space (as DALI's), not HSV (see saturation_hue_matrix).
All random numbers come from one CPU torch.Generator (see `augment_seed`), so a run repeats on
any device: parameters are drawn on the CPU and only then moved to the batch's device.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2.functional import equalize

from gcl.train.config import AugConfig

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range (torchvision / solo-learn default)
CROP_TRIES = 10  # torchvision draws up to 10 boxes before its centre-crop fallback
BLUR_SIGMA = (0.1, 2.0)  # BYOL / solo-learn blur sigma range
SOLARIZE_THRESHOLD = 128 / 255  # torchvision's RandomSolarize(threshold=128) on uint8
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def augment_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """A 63-bit seed from the run position: the same step of the same run draws the same views."""
    digest = hashlib.sha256(f"gcl-augment:{seed}:{epoch}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def crop_boxes(gen: torch.Generator, n: int, height: int, width: int, scale: tuple[float, float]) -> torch.Tensor:
    """(n, 4) integer crop boxes (x0, y0, x1, y1) drawn as torchvision's RandomResizedCrop.get_params:
    up to 10 tries of area ~ U(scale), log-aspect ~ U(log ratio); the first box that fits wins, else
    a centre crop of the whole image clamped to the ratio range."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, CROP_TRIES, generator=gen, dtype=torch.float64))
    log_r = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * torch.rand(
        n, CROP_TRIES, generator=gen, dtype=torch.float64)
    aspect = log_r.exp()
    w = (target * aspect).sqrt().round()
    h = (target / aspect).sqrt().round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1)  # index of the first fitting try (0 when none fits)
    w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
    pos = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    y0 = (pos[:, 0] * (height - h + 1)).floor()
    x0 = (pos[:, 1] * (width - w + 1)).floor()
    # fallback: the largest centred box inside the aspect range
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        fw, fh = width, round(width / RATIO[0])
    elif in_ratio > RATIO[1]:
        fw, fh = round(height * RATIO[1]), height
    else:
        fw, fh = width, height
    none = ~fits.any(1)
    w, h = torch.where(none, float(fw), w), torch.where(none, float(fh), h)
    x0 = torch.where(none, float((width - fw) // 2), x0)
    y0 = torch.where(none, float((height - fh) // 2), y0)
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize to size x size in one roi_align call.

    Antialiasing: roi_align's adaptive sampling averages ceil(box/size)^2 bilinear samples per
    output pixel, i.e. a box filter over the source footprint when downscaling (a 64 px shard to a
    32 px crop averages 2x2 pixels exactly); when upscaling it is plain bilinear (aligned=True:
    pixel centres at +0.5, as torchvision's resize)."""
    idx = torch.arange(x.shape[0], dtype=x.dtype, device=x.device)[:, None]
    rois = torch.cat([idx, boxes.to(device=x.device, dtype=x.dtype)], 1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


# RGB <-> YIQ (NTSC): Y is the luma above; I and Q carry the colour. Saturation scales (I, Q) and
# hue rotates them, as NVIDIA DALI's hue/saturation ops (solo-learn's DALI pipeline) do: one 3x3
# matrix per sample, one batched matmul, instead of ~40 elementwise HSV ops per pixel.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                        dtype=torch.float64)
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def saturation_hue_matrix(sat: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) RGB->RGB matrices: chroma scaled by sat, rotated by hue (fraction of a turn).
    With hue 0 this is exactly torchvision's adjust_saturation before its clamp:
    gray + sat * (x - gray)."""
    angle = hue.double() * 2 * math.pi
    cos, sin = angle.cos() * sat.double(), angle.sin() * sat.double()
    mid = torch.zeros(hue.shape[0], 3, 3, dtype=torch.float64)
    mid[:, 0, 0] = 1.0
    # sign chosen so a positive shift turns red towards green, the direction of an HSV hue shift
    mid[:, 1, 1], mid[:, 1, 2], mid[:, 2, 1], mid[:, 2, 2] = cos, sin, -sin, cos
    return _YIQ2RGB @ mid @ _RGB2YIQ


def color_jitter(x: torch.Tensor, gen: torch.Generator, cfg: AugConfig) -> torch.Tensor:
    """Brightness, contrast, then saturation and hue (fixed order), factors ~ U as torchvision's
    ColorJitter draws them; the whole jitter is applied to a sample with probability
    color_jitter_prob. Brightness and contrast are torchvision's ops exactly; saturation + hue
    are one YIQ matrix (above), clamped once."""
    n = x.shape[0]
    apply = torch.rand(n, generator=gen) < cfg.color_jitter_prob
    b = _uniform(gen, n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)
    c = _uniform(gen, n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)
    s = _uniform(gen, n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)
    h = _uniform(gen, n, -cfg.hue, cfg.hue)
    if not bool(apply.any()):
        return x
    y = (x * _per_sample(b, x)).clamp(0, 1)
    mean = grayscale(y).mean((1, 2, 3), keepdim=True)
    y = (_per_sample(c, x) * y + (1 - _per_sample(c, x)) * mean).clamp(0, 1)
    m = saturation_hue_matrix(s, h).to(device=x.device, dtype=x.dtype)
    y = torch.bmm(m, y.flatten(2)).view_as(y).clamp(0, 1)
    return torch.where(_per_sample(apply, x).bool(), y, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per sample, reflect padding.

    Kernel radius ceil(3 * max sigma) (13 taps at sigma 2): solo-learn's CIFAR pipeline blurs with
    PIL's untruncated filter, and its 10%-of-size kernel (23 at 224 px) would be 3 taps at 32 px,
    which cuts sigma 2 down to a near no-op."""
    n, ch, hgt, wid = x.shape
    radius = min(math.ceil(3 * BLUR_SIGMA[1]), (min(hgt, wid) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.to(device=x.device, dtype=x.dtype)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (n*ch, taps)
    y = x.reshape(1, n * ch, hgt, wid)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * ch)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * ch)
    return y.reshape(n, ch, hgt, wid)


def _where_subset(mask: torch.Tensor, x: torch.Tensor, op) -> torch.Tensor:
    """Apply `op` only to the samples in `mask` (op sees the subset batch)."""
    idx = mask.nonzero()[:, 0].to(x.device)
    if idx.numel() == 0:
        return x
    return x.index_copy(0, idx, op(x.index_select(0, idx), mask.nonzero()[:, 0]))


def augment_batch(images: torch.Tensor, cfg: AugConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B,3,H,W) on any device -> float (B,3,S,S) in [0,1], S = cfg.crop_size, each sample
    with its own random crop, jitter, grayscale, blur, solarization, equalization and flip."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"augment_batch needs a uint8 (B,3,H,W) batch, got {tuple(images.shape)} {images.dtype}")
    n, _, hgt, wid = images.shape
    boxes = crop_boxes(gen, n, hgt, wid, (cfg.min_scale, cfg.max_scale))
    x = resized_crop(images.float().div_(255.0), boxes, cfg.crop_size).clamp_(0, 1)
    if cfg.color_jitter_prob > 0:
        x = color_jitter(x, gen, cfg)
    if cfg.gray_scale_prob > 0:
        gray = torch.rand(n, generator=gen) < cfg.gray_scale_prob
        x = torch.where(_per_sample(gray, x).bool(), grayscale(x).expand_as(x), x)
    if cfg.gaussian_prob > 0:
        blur = torch.rand(n, generator=gen) < cfg.gaussian_prob
        sigma = _uniform(gen, n, *BLUR_SIGMA)
        x = _where_subset(blur, x, lambda sub, idx: gaussian_blur(sub, sigma[idx]))
    if cfg.solarization_prob > 0:
        sol = _per_sample(torch.rand(n, generator=gen) < cfg.solarization_prob, x).bool()
        x = torch.where(sol & (x >= SOLARIZE_THRESHOLD), 1.0 - x, x)
    if cfg.equalization_prob > 0:
        eq = torch.rand(n, generator=gen) < cfg.equalization_prob
        # torchvision's equalize works on uint8 batches: quantise, equalise, back to [0,1]
        x = _where_subset(eq, x, lambda sub, _: equalize(sub.mul(255).round_().to(torch.uint8)).float().div_(255))
    if cfg.horizontal_flip_prob > 0:
        flip = _per_sample(torch.rand(n, generator=gen) < cfg.horizontal_flip_prob, x).bool()
        x = torch.where(flip, x.flip(-1), x)
    return x.clamp_(0, 1)  # blur and the HSV round trip can leave values 1 ulp outside [0,1]


def augment_views(views: list[torch.Tensor], generated: torch.Tensor | None, augs: list[AugConfig],
                  gen_aug: AugConfig | None, gen: torch.Generator) -> list[torch.Tensor]:
    """Augment every view position of a batch: view i uses augs[i % len(augs)] (BYOL-style
    asymmetric pairs, or one entry per position), except that samples whose member i is a generated view use `gen_aug` when
    one is given (generated: (B, V) bool, which members are generated)."""
    out = []
    for i, v in enumerate(views):
        cfg = augs[i % len(augs)]
        if gen_aug is None or generated is None or not bool(generated[:, i].any()):
            out.append(augment_batch(v, cfg, gen))
            continue
        is_gen = generated[:, i].cpu()
        res = torch.empty(v.shape[0], 3, cfg.crop_size, cfg.crop_size, device=v.device)
        for mask, c in ((~is_gen, cfg), (is_gen, gen_aug)):
            idx = mask.nonzero()[:, 0]
            if idx.numel():
                res[idx.to(v.device)] = augment_batch(v[idx.to(v.device)], c, gen)
        out.append(res)
    return out
