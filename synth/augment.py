"""The feature-map (latent) augmenter: one function per op on latents, seeded per (seed, sample
key, view). Recipes (which ops, with which parameter ranges) are parsed in synth/recipe.py; here
each view's drawn values are applied and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gcl.synth.recipe import Recipe, draw, view_seed

# Each op: (z (C,h,w), drawn params, ctx) -> new z. ctx carries the rng, the batch and generator.


@dataclass
class OpContext:
    gen: torch.Generator  # torch RNG on CPU: same draws on any device
    rng: np.random.Generator
    batch: torch.Tensor  # original latents of the whole batch (for mix)
    index: int  # this sample's row in the batch
    generator: object  # gcl.synth.generators.base.Generator
    record: dict = field(default_factory=dict)  # extra facts to store (e.g. mix partner)


def _randn_like(z: torch.Tensor, ctx: OpContext) -> torch.Tensor:
    return torch.randn(z.shape, generator=ctx.gen, dtype=torch.float32).to(z.device, z.dtype)


def op_noise(z, strength: float, ctx: OpContext):
    """Gaussian noise scaled to this latent's own std, so `strength` means the same on any model."""
    return z + strength * z.float().std().to(z.dtype) * _randn_like(z, ctx)


def op_mask(z, ratio: float, fill: str, ctx: OpContext):
    """Replace a random `ratio` of latent positions with noise matching per-channel statistics,
    or (VQ models, fill=codes) with randomly drawn codebook vectors."""
    c, h, w = z.shape
    n = int(round(ratio * h * w))
    if n == 0:
        return z
    pos = torch.randperm(h * w, generator=ctx.gen)[:n].to(z.device)
    flat = z.reshape(c, h * w).clone()
    if fill == "codes":
        book = ctx.generator.codebook()
        codes = torch.randint(0, book.shape[0], (n,), generator=ctx.gen).to(book.device)
        flat[:, pos] = book[codes].T.to(z.dtype)
    else:
        mean, std = flat.float().mean(1, keepdim=True), flat.float().std(1, keepdim=True)
        noise = torch.randn((c, n), generator=ctx.gen).to(z.device)
        flat[:, pos] = (mean.to(z.device) + std.to(z.device) * noise).to(z.dtype)
    return flat.reshape(c, h, w)


def op_mix(z, ratio: float, ctx: OpContext):
    """Interpolate toward another image's latent in the batch (partner recorded by key)."""
    b = ctx.batch.shape[0]
    if b < 2:
        ctx.record["partner"] = None  # nothing to mix with: view equals the unmixed latent
        return z
    partner = int(ctx.rng.integers(0, b - 1))
    partner += partner >= ctx.index  # never the sample itself
    ctx.record["partner_index"] = partner
    return (1 - ratio) * z + ratio * ctx.batch[partner]


def op_vq_replace(z, ratio: float, ctx: OpContext):
    """Replace a random `ratio` of the code indices with uniformly random codes."""
    idx = ctx.generator.tokens(z.unsqueeze(0))[0]
    flat = idx.reshape(-1).clone()
    n = int(round(ratio * flat.numel()))
    if n:
        pos = torch.randperm(flat.numel(), generator=ctx.gen)[:n].to(flat.device)
        num_codes = ctx.generator.codebook().shape[0]
        flat[pos] = torch.randint(0, num_codes, (n,), generator=ctx.gen).to(flat.device)
    return ctx.generator.embed(flat.view(1, *idx.shape))[0]


def op_vq_swap(z, ratio: float, k: float, ctx: OpContext):
    """Swap a random `ratio` of codes for one of their k nearest codebook neighbours: a small,
    semantically local change, unlike vq_replace."""
    idx = ctx.generator.tokens(z.unsqueeze(0))[0]
    flat = idx.reshape(-1).clone()
    n = int(round(ratio * flat.numel()))
    k = max(1, int(k))
    if n:
        pos = torch.randperm(flat.numel(), generator=ctx.gen)[:n].to(flat.device)
        book = ctx.generator.codebook().float()
        chosen = flat[pos]
        dist = torch.cdist(book[chosen], book)  # (n, num_codes)
        dist[torch.arange(n), chosen] = float("inf")  # exclude the code itself
        neighbours = dist.topk(min(k, book.shape[0] - 1), largest=False).indices
        pick = torch.randint(0, neighbours.shape[1], (n,), generator=ctx.gen).to(neighbours.device)
        flat[pos] = neighbours[torch.arange(n), pick]
    return ctx.generator.embed(flat.view(1, *idx.shape))[0]


def op_generator(z, ctx: OpContext, **values):
    """A generator op (sdedit, resample, remask): the latent is left as it is; the drawn values
    reach the generator's sampler through the view record (see worker.generate_views)."""
    return z


# op name (synth/recipe.py's OP_PARAMS) -> its function
OPS = {
    "noise": op_noise,
    "mask": op_mask,
    "mix": op_mix,
    "vq_replace": op_vq_replace,
    "vq_swap": op_vq_swap,
    "sdedit": op_generator,
    "resample": op_generator,
    "remask": op_generator,
}


def augment_latents(generator, latents: torch.Tensor, keys: list[str], recipe: Recipe, view: int, seed: int):
    """Apply `recipe` to every latent of the batch for one view index.

    Returns (augmented latents, records) with records[i] = {"view", "seed", "ops": [...]}.
    """
    out = latents.clone()
    records = []
    for i, key in enumerate(keys):
        s = view_seed(seed, key, view)
        ctx = OpContext(torch.Generator().manual_seed(s), np.random.default_rng(s), latents, i, generator)
        z = latents[i]
        applied = []
        for spec in recipe.ops:
            values = draw(spec, ctx.rng)
            if values is None:
                continue
            ctx.record = {}
            z = OPS[spec.op](z, **values, ctx=ctx)
            if "partner_index" in ctx.record:
                ctx.record = {"partner": keys[ctx.record.pop("partner_index")]}
            applied.append({"op": spec.op, **values, **ctx.record})
        out[i] = z
        records.append({"view": view, "seed": s, "ops": applied})
    return out, records
