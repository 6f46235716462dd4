"""Checks every generator family must pass, run on tiny random models saved with save_pretrained.

Each takes a loaded generator and a recipe template with one `{s}` (the family's strength-like
value): shapes and range, same seed -> same bytes, per-image batch-order invariance, strength 0
gives the plain reconstruction, distance to the input grows with strength.
"""

from __future__ import annotations

import numpy as np
import torch

from gcl.synth.recipe import parse_recipe
from gcl.synth.worker import generate_views, to_tensor, to_uint8


def images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random images (low-frequency colour fields): like photos, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(small, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return list(to_uint8(x))


def keys(n: int) -> list[str]:
    return [f"img{i:03d}" for i in range(n)]


def views(gen, imgs, template: str, s: float, k: int = 2, seed: int = 0, residual: bool = False):
    out, recs = generate_views(gen, imgs, keys(len(imgs)), parse_recipe(template.format(s=s)), k, seed, residual)
    return np.stack([np.stack(v) for v in out]), recs  # (N, K, H, W, 3) uint8


def check_shapes_and_determinism(gen, template: str, size: int, s: float = 0.5):
    imgs = images(3, size)
    a, recs = views(gen, imgs, template, s)
    b, _ = views(gen, imgs, template, s)
    c, _ = views(gen, imgs, template, s, seed=1)
    assert a.shape == (3, 2, size, size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seed -> same bytes
    assert not np.array_equal(a, c)  # another seed -> other views
    assert not np.array_equal(a[:, 0], a[:, 1])  # the K views of one image differ
    assert len(recs) == 3 and recs[0][0]["ops"]


def check_batch_order_invariance(gen, template: str, size: int, s: float = 0.5, tol: int = 2):
    """A view depends on its own image, key and seed only: reversing the batch or running an image
    alone gives the same view (up to `tol` grey levels of float summation order)."""
    imgs = images(3, size)
    full, _ = views(gen, imgs, template, s)
    rev, _ = generate_views(gen, imgs[::-1], keys(3)[::-1], parse_recipe(template.format(s=s)), 2, 0)
    alone, _ = generate_views(gen, imgs[1:2], keys(3)[1:2], parse_recipe(template.format(s=s)), 2, 0)
    rev = np.stack([np.stack(v) for v in rev])[::-1]
    assert np.abs(full.astype(int) - rev.astype(int)).max() <= tol
    assert np.abs(full[1].astype(int) - np.stack(alone[0]).astype(int)).max() <= tol


@torch.inference_mode()
def check_strength_zero_is_reconstruction(gen, template: str, size: int):
    imgs = images(2, size)
    zero, _ = views(gen, imgs, template, 0.0)
    recon = to_uint8(gen.decode(gen.encode(to_tensor(imgs))))
    assert np.abs(zero[:, 0].astype(int) - recon.astype(int)).max() <= 1
    residual, _ = views(gen, imgs, template, 0.0, residual=True)
    assert np.array_equal(residual[:, 0], np.stack(imgs))  # residual views at strength 0 are the input


def check_distance_grows(gen, template: str, size: int, strengths=(0.2, 0.5, 1.0), residual: bool = True):
    """Residual views by default: their distance to the input is exactly the generator's change
    |G(x; s) - G(x; 0)|, which random-init decoders (that map every input near one image) still show."""
    imgs = images(4, size)
    x = np.stack(imgs).astype(float)[:, None]
    dist = [np.abs(views(gen, imgs, template, s, k=2, residual=residual)[0].astype(float) - x).mean() for s in strengths]
    assert all(a < b for a, b in zip(dist, dist[1:])), dist
    return dist


# The properties every generator family must have, by name for parametrized tests.
FAMILY_CHECKS = {
    "shapes_and_determinism": check_shapes_and_determinism,
    "batch_order_invariance": check_batch_order_invariance,
    "strength_zero_is_reconstruction": check_strength_zero_is_reconstruction,
    "distance_grows": check_distance_grows,
}
