"""Batched handcrafted augmentation: per-op statistics, exactness against torchvision, antialiasing,
determinism, and routing of generated members to their own augmentation."""

import math

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from gcl.train.augment import (RATIO, augment_batch, augment_seed, augment_views, crop_boxes,
                               gaussian_blur, resized_crop, saturation_hue_matrix)
from gcl.train.config import AugConfig
from pathlib import Path

CIFAR_TEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_test.npz"

OFF = dict(color_jitter_prob=0.0, gray_scale_prob=0.0, gaussian_prob=0.0, solarization_prob=0.0,
           equalization_prob=0.0, horizontal_flip_prob=0.0, min_scale=1.0, max_scale=1.0)


def _images(n=256, seed=0):
    with np.load(CIFAR_TEST) as z:
        return torch.from_numpy(z["images"][seed:seed + n]).permute(0, 3, 1, 2).contiguous()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _within_binomial(k, n, p, z=4.0):
    return abs(k / n - p) <= z * math.sqrt(p * (1 - p) / n) + 1e-9


def test_output_dtype_shape_range_and_determinism():
    x = _images(64)
    cfg = AugConfig(crop_size=24, gaussian_prob=0.5, solarization_prob=0.2, equalization_prob=0.2)
    a = augment_batch(x, cfg, _gen(augment_seed(0, 1, 2, 0)))
    b = augment_batch(x, cfg, _gen(augment_seed(0, 1, 2, 0)))
    c = augment_batch(x, cfg, _gen(augment_seed(0, 1, 3, 0)))
    assert a.dtype == torch.float32 and a.shape == (64, 3, 24, 24)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(x.float(), cfg, _gen())


def test_full_crop_at_native_size_is_identity_and_flip_rate():
    x = _images(512)
    same = augment_batch(x, AugConfig(**OFF), _gen())
    assert torch.allclose(same, x.float() / 255, atol=1e-6)
    out = augment_batch(x, AugConfig(**{**OFF, "horizontal_flip_prob": 0.3}), _gen(1))
    flipped = torch.isclose(out, x.float().flip(-1) / 255, atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, x.float() / 255, atol=1e-6).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert _within_binomial(int(flipped.sum()), 512, 0.3)


def test_grayscale_rate():
    x = _images(512)
    out = augment_batch(x, AugConfig(**{**OFF, "gray_scale_prob": 0.2}), _gen(2))
    gray = ((out[:, 0] - out[:, 1]).abs().amax((1, 2)) < 1e-6) & ((out[:, 1] - out[:, 2]).abs().amax((1, 2)) < 1e-6)
    assert _within_binomial(int(gray.sum()), 512, 0.2)


def test_crop_boxes_scale_ratio_and_bounds():
    boxes = crop_boxes(_gen(3), 4000, 64, 64, (0.08, 1.0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all())
    area = w * h / 64 ** 2
    # rounding w and h to whole pixels moves the area by at most ~ (w + h + 1) / 64^2
    slack = (w + h + 1) / 64 ** 2
    assert bool(((area >= 0.08 - slack) & (area <= 1.0 + slack)).all())
    r = w / h
    assert bool(((r >= RATIO[0] * 0.85) & (r <= RATIO[1] / 0.85)).all())
    assert 0.45 < float(area.mean()) < 0.6  # E[U(0.08, 1)] = 0.54, slightly less as big boxes fail to fit
    assert float(w.std()) > 5  # per-sample boxes, not one box for the batch


def test_downscale_is_antialiased():
    # A 1-px checkerboard at 64 px, full crop to 32 px: a box filter gives flat 0.5 grey;
    # point-sampling would return the checkerboard (all 0 or all 1).
    board = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 255).to(torch.uint8)
    x = board.expand(2, 3, 64, 64).contiguous()
    out = resized_crop(x.float() / 255, torch.tensor([[0.0, 0, 64, 64]] * 2), 32)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=1e-6)


def _apply(m, x):
    return torch.bmm(m.float(), x.flatten(2)).view_as(x)


def test_saturation_matches_torchvision_and_hue_rotates_chroma():
    x = _images(4).float() / 255
    for sat in (0.0, 0.4, 1.7):
        ours = _apply(saturation_hue_matrix(torch.full((4,), sat), torch.zeros(4)), x).clamp(0, 1)
        # torchvision's grey uses 0.2989 for red where ITU-R 601 (ours) has 0.299: 1e-4 apart
        assert torch.allclose(ours, TF.adjust_saturation(x, sat), atol=3e-4)
    one = torch.ones(4)
    rotated = _apply(saturation_hue_matrix(one, torch.full((4,), 0.2)), x)
    back = _apply(saturation_hue_matrix(one, torch.full((4,), -0.2)), rotated)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose(back, x, atol=1e-5) and not torch.allclose(rotated, x, atol=1e-2)
    assert torch.allclose((rotated * luma).sum(1), (x * luma).sum(1), atol=1e-5)  # hue keeps luma
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1) * 0.5 + 0.25
    third = _apply(saturation_hue_matrix(torch.ones(1), torch.full((1,), 1 / 3)), red).flatten()
    assert int(third.argmax()) == 1  # a third of a turn takes red towards green, as in HSV
    sigma = torch.tensor([0.3, 1.0, 1.7, 2.0])
    ours = gaussian_blur(x, sigma)
    for i in range(4):
        ref = TF.gaussian_blur(x[i:i + 1], kernel_size=[13, 13], sigma=[float(sigma[i])] * 2)
        assert torch.allclose(ours[i:i + 1], ref, atol=1e-5)


def test_jitter_blur_solarize_rates():
    x = _images(400)
    base = AugConfig(**OFF)
    out = augment_batch(x, AugConfig(**{**OFF, "color_jitter_prob": 0.8}), _gen(4))
    changed = (out - x.float() / 255).abs().flatten(1).amax(1) > 1e-4
    assert _within_binomial(int(changed.sum()), 400, 0.8)
    out = augment_batch(x, AugConfig(**{**OFF, "solarization_prob": 0.5}), _gen(5))
    sol = (out - augment_batch(x, base, _gen(5))).abs().flatten(1).amax(1) > 1e-4
    assert _within_binomial(int(sol.sum()), 400, 0.5)
    out = augment_batch(x, AugConfig(**{**OFF, "gaussian_prob": 0.5}), _gen(6))
    blurred = (out - x.float() / 255).abs().flatten(1).amax(1) > 1e-3
    assert _within_binomial(int(blurred.sum()), 400, 0.5, z=5)  # sigma near 0.1 barely changes pixels
    out = augment_batch(x, AugConfig(**{**OFF, "equalization_prob": 1.0}), _gen(7))
    assert torch.equal((out * 255).round().to(torch.uint8), TF.equalize(x))


def test_mixed_members_route_generated_views_to_their_augmentation():
    x = _images(128)
    generated = torch.zeros(128, 3, dtype=torch.bool)
    generated[::2, 2] = True  # member 2 is generated in every other family
    plain = AugConfig(**OFF)
    gen_aug = AugConfig(**{**OFF, "gray_scale_prob": 1.0})
    views = augment_views([x, x, x], generated, [plain], gen_aug, _gen(8))
    assert [v.shape for v in views] == [(128, 3, 32, 32)] * 3
    is_gray = (views[2][:, 0] - views[2][:, 1]).abs().flatten(1).amax(1) < 1e-6
    natural = (x[:, 0] == x[:, 1]).flatten(1).all(1) & (x[:, 1] == x[:, 2]).flatten(1).all(1)  # grey photos
    assert torch.equal(is_gray, generated[:, 2] | natural) and not bool(natural.all())
    assert torch.allclose(views[0], x.float() / 255, atol=1e-6)
    # without gen_aug every member uses the default augmentation
    views = augment_views([x, x, x], generated, [plain], None, _gen(8))
    assert torch.allclose(views[2], x.float() / 255, atol=1e-6)


def test_one_augmentation_per_view_position_pairs_with_gen_augmentations():
    """augmentations: [full, full, weak] gives view position 2 the weak entry. With members
    orig,orig,gen, gen_augmentations = weak draws exactly the same numbers for that position,
    so a study's all-original control with a weak third entry is paired view for view."""
    from gcl.train.config import ConfigError, parse_recipe

    x = _images(64)
    full, weak = AugConfig(**OFF), AugConfig(**{**OFF, "gray_scale_prob": 1.0})
    by_position = augment_views([x, x, x], None, [full, full, weak], None, _gen(3))
    is_gray = (by_position[2][:, 0] - by_position[2][:, 1]).abs().flatten(1).amax(1) < 1e-6
    assert bool(is_gray.all()) and torch.allclose(by_position[0], x.float() / 255, atol=1e-6)
    generated = torch.zeros(64, 3, dtype=torch.bool)
    generated[:, 2] = True
    full_jitter = AugConfig(min_scale=0.3)  # random draws in every op, so equal outputs mean equal draws
    weak_jitter = AugConfig(min_scale=0.5, brightness=0.2, gray_scale_prob=0.1)
    a = augment_views([x, x, x], generated, [full_jitter], weak_jitter, _gen(5))
    b = augment_views([x, x, x], None, [full_jitter, full_jitter, weak_jitter], None, _gen(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    cfg = parse_recipe({"augmentations": [{"crop_size": 32}] * 2 + [{"crop_size": 32, "gray_scale_prob": 0.0}]}, "t")
    assert len(cfg.augmentations) == 3 and cfg.augmentations[2].gray_scale_prob == 0.0
    with pytest.raises(ConfigError, match="augmentations.*at least 1 item"):
        parse_recipe({"augmentations": []}, "t")
