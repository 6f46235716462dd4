"""Pieces the GPU checks share: the measured matmul peak, input images, device sync."""

from __future__ import annotations

import time

import numpy as np
import torch

from gcl.inputs import resize_center_crop


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Dense n x n x n matmul FLOP/s on random data, mean of `reps` after 3 warm-ups: the peak
    that this run's shares are taken of (measured, not the datasheet's)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def input_images(npz: str | None, n: int, resolution: int) -> list[np.ndarray]:
    """n uint8 HWC images at `resolution`: the first n of an npz's 'images' (repeated when it has
    fewer), or, without one, smooth random images (bilinear upsampling of 8 x 8 noise)."""
    if npz:
        with np.load(npz) as z:
            raw = z["images"][:n]
        return [resize_center_crop(raw[i % len(raw)], resolution) for i in range(n)]
    g = torch.Generator().manual_seed(0)
    small = torch.rand(n, 3, 8, 8, generator=g)
    big = torch.nn.functional.interpolate(small, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return list(big.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
