"""Worker: one shard = decode -> batch -> ENCODER -> LATENT AUGMENTER -> DECODER -> encode -> tar.

Image decode/resize runs in a thread pool ahead of the model (prefetch of the next batches) and
JPEG/PNG encoding + tar writing runs in another thread behind it, so the model is the only
thing on the critical path. Bad inputs are counted per error type and skipped.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from gcl.synth.augment import augment_latents
from gcl.synth.committed import kept_stats
from gcl.synth.recipe import Recipe
from gcl.inputs import InputItem, load_image_bytes, load_rgb, resize_center_crop
from gcl.synth.plan import ShardTask, SynthOptions
from gcl.synth.reference import PixelSketch
from gcl.io import write_json_atomic
from gcl.manifest import read_stats
from gcl.webinputs import iter_member_bytes
from gcl.shards import ORIG, Sample, ShardWriter, encode_image, keys_digest, sample_key, view_member

log = logging.getLogger("gcl.synth")
MAX_LOGGED_SKIPS = 1000  # per shard, in its stats file; the counts stay exact beyond it
PREFETCH_BATCHES = 2  # batches decoded ahead of the model: enough to hide decode, bounded memory


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


SAMPLER_SEED_OFFSET = 1  # a view's sampler stream is seeded view_seed + 1: independent of the latent ops' draws


@torch.inference_mode()
def generate_views(generator, images: list[np.ndarray], keys: list[str], recipe: Recipe, num_views: int, seed: int,
                   residual: bool = False):
    """Run one batch through encoder -> augmenter -> decoder (or the generator's sampler).

    residual=True returns x + G(view) - G(plain reconstruction): only the generator's change
    enters, so a view with zero perturbation (strength 0, ratio 0, no noise) is the input itself.
    Returns (views, records): views[i] is a list of K uint8 HWC arrays, records[i] the K view
    records (ops, drawn values, seed) for image i.
    """
    x = to_tensor(images)
    latents = generator.encode(x)
    base = generator.decode(latents).float().cpu() if residual else None
    views = [[] for _ in images]
    records = [[] for _ in images]
    for v in range(num_views):
        z, recs = augment_latents(generator, latents, keys, recipe, v, seed)
        out = render(generator, z, recs)
        if residual:
            out = x + out.float().cpu() - base
        out = to_uint8(out)
        for i in range(len(images)):
            views[i].append(out[i])
            records[i].append(recs[i])
    return views, records


def render(generator, z: torch.Tensor, recs: list[dict]) -> torch.Tensor:
    """Plain decode, or the generator's sampler with each image's drawn op values and own RNG."""
    if generator.view_op is None:
        return generator.decode(z)
    params = []
    for r in recs:
        op = next((o for o in r["ops"] if o["op"] == generator.view_op), None)
        params.append(None if op is None else {k: v for k, v in op.items() if k != "op"})
    gens = [torch.Generator().manual_seed((r["seed"] + SAMPLER_SEED_OFFSET) & ((1 << 63) - 1)) for r in recs]
    return generator.sample(z, params, gens)


FLOP_COUNT_IMAGES = 2  # images in the one batch whose FLOPs are counted (per-image cost is their mean)


def count_flops(generator, recipe: Recipe, num_views: int, resolution: int, seed: int, residual: bool = False) -> int:
    """Model FLOPs per input image for its K views (torch's FlopCounterMode: matmuls and convs),
    on a fixed grey batch whose keys draw the recipe's values like real keys do."""
    from torch.utils.flop_counter import FlopCounterMode

    images = [np.full((resolution, resolution, 3), 128, np.uint8)] * FLOP_COUNT_IMAGES
    keys = [f"flop-count-{i}" for i in range(FLOP_COUNT_IMAGES)]
    with FlopCounterMode(display=False) as counter:
        generate_views(generator, images, keys, recipe, num_views, seed, residual)
    return int(counter.get_total_flops() // FLOP_COUNT_IMAGES)


def recipe_problem(generator, recipe: Recipe) -> str | None:
    """Why this recipe cannot run on this generator (one line), or None."""
    if recipe.needs_codebook and not generator.has_codebook:
        return f"recipe {recipe.spec!r} uses codebook ops but --generator {generator.family} has no codebook"
    if recipe.view_op is not None and recipe.view_op != generator.view_op:
        from gcl.synth.recipe import GENERATOR_OPS

        return f"recipe op {recipe.view_op} needs --generator {GENERATOR_OPS[recipe.view_op]}, not {generator.family}"
    return None


def _load_one(item: InputItem, resolution: int, data: bytes | None = None):
    arr, err = load_rgb(item) if item.member is None else load_image_bytes(data)
    if err is not None:
        return item, None, err
    try:
        return item, resize_center_crop(arr, resolution), None
    except Exception:  # noqa: BLE001 - a resize failure is one bad input, not a dead run
        return item, None, "unreadable"


def process_shard(task: ShardTask, options: SynthOptions, generator, recipe: Recipe,
                  class_names: list[str] | None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write one shard and its stats (the commit marker). Returns the stats dict."""
    kept, remade = kept_stats(task, options)  # a committed shard, checked to be this plan's
    if kept is not None:
        return dict(kept, resumed=True)
    t0 = time.perf_counter()
    errors: Counter = Counter()
    skipped: list[dict] = []
    writer = ShardWriter(task.tar_path)
    sketch = PixelSketch()
    bs = options.batch_size
    batches = [task.items[i : i + bs] for i in range(0, len(task.items), bs)]
    members = iter_member_bytes([it for it in task.items if it.member is not None])  # tars: each streamed once

    def submit(batch):
        data = [next(members)[1] if it.member is not None else None for it in batch]
        return loader.map(_load_one, batch, [options.resolution] * len(batch), data)

    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="gcl-load") as loader, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcl-write") as encoder_pool:
            pending_loads = [submit(b) for b in batches[:PREFETCH_BATCHES]]
            pending_write = None
            for bi in range(len(batches)):
                loaded = list(pending_loads.pop(0))
                if bi + PREFETCH_BATCHES < len(batches):
                    pending_loads.append(submit(batches[bi + PREFETCH_BATCHES]))
                good = []
                for item, arr, err in loaded:
                    if err is None:
                        good.append((item, arr))
                    else:
                        errors[err] += 1
                        log.warning("skipped %s: %s", item.source, err)
                        if len(skipped) < MAX_LOGGED_SKIPS:
                            skipped.append({"source": item.source, "error": err})
                if good:
                    keys = [sample_key(it.source) for it, _ in good]
                    views, records = generate_views(generator, [a for _, a in good], keys, recipe, options.views, options.seed,
                                                    options.residual)
                    if pending_write is not None:
                        pending_write.result()  # keep tar order; surface write errors
                    pending_write = encoder_pool.submit(_write_batch, writer, sketch, good, keys, views, records, options, class_names)
                if progress:
                    progress(len(good), len(loaded) - len(good))
            if pending_write is not None:
                pending_write.result()
        size, digest = writer.close()
    except BaseException:
        writer.abort()
        raise
    stats = {
        "shard": os.path.basename(task.tar_path), "index": task.index, "samples": writer.count,
        "inputs": len(task.items), "bytes": size, "sha256": digest, "errors": dict(errors),
        "skipped": skipped, "seconds": round(time.perf_counter() - t0, 3), "keys_sha256": keys_digest(writer.keys),
        "pixel_sketch": sketch.to_json(),
    }
    write_json_atomic(task.stats_path, stats)  # written last: the shard's commit marker
    return dict(stats, remade=remade) if remade else stats  # why a committed shard was made again (not on disk)


def _write_batch(writer: ShardWriter, sketch: PixelSketch, good, keys, views, records, options: SynthOptions,
                 class_names) -> None:
    fmt, q = options.image_format, options.quality
    for (item, arr), key, vs, recs in zip(good, keys, views, records):
        sketch.add(key, {ORIG: arr, **{view_member(v): view for v, view in enumerate(vs)}})
        images = {ORIG: encode_image(arr, fmt, q)}
        for v, view in enumerate(vs):
            images[view_member(v)] = encode_image(view, fmt, q)
        meta = {
            "source": item.source, "resolution": options.resolution, "generator": options.generator,
            "weights_sha256": options.weights_sha256, "recipe": options.recipe, "seed": options.seed,
            "residual": options.residual, "views": recs,
        }
        if item.label is not None:
            meta["label"] = item.label
            if class_names:
                meta["class_name"] = class_names[item.label]
        writer.write(Sample(key, images, meta, item.label, fmt))
