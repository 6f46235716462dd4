"""Synthesis throughput of the real models (TAEF2, ESRGAN) on a CPU, measured in one run so that ratios are fair.

    python bench/synth_throughput.py                               # CPU: TAEF2 and ESRGAN, 64 px, K=2

Real families (--families; the real weights from GCL_HOME / ../shared): model-only img/s
(encode + augment + decode/sampler on preloaded tensors, same batch, size and recipe) against
the end-to-end pipeline (`gcl-synth run` in a subprocess, read from its manifest), their ratio
(target >= 0.90), and for TAEF2 a naive one-image loop and the pipeline's peak RSS per dataset
size. Every family at its published size on a GPU: bench/gpu_families.py (bench/gpu_checks.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gcl.synth.recipe import parse_recipe
from gcl.synth.defaults import resolve_cifar10, resolve_esrgan, resolve_taef2
from gcl.synth.generators import DEFAULT_RECIPES, load_generator
from gcl.inputs import list_inputs, load_rgb, resize_center_crop
from gcl.shards import Sample, ShardWriter, encode_image, sample_key
from gcl.synth.worker import count_flops, generate_views

REAL_MODELS = {"taesd": resolve_taef2, "esrgan": resolve_esrgan}


def model_only(gen, images, keys, recipe, views, batch, seed=0):
    generate_views(gen, images[:batch], keys[:batch], recipe, views, seed)  # warm-up
    t = time.perf_counter()
    for i in range(0, len(images), batch):
        generate_views(gen, images[i : i + batch], keys[i : i + batch], recipe, views, seed)
    return len(images) / (time.perf_counter() - t)


def naive(gen, items, resolution, recipe, views, out_path, seed=0):
    writer = ShardWriter(out_path)
    t = time.perf_counter()
    for it in items:
        arr, _ = load_rgb(it)
        arr = resize_center_crop(arr, resolution)
        key = sample_key(it.source)
        vs, recs = generate_views(gen, [arr], [key], recipe, views, seed)
        imgs = {"orig": encode_image(arr, "jpg", 95)} | {f"view{v}": encode_image(x, "jpg", 95) for v, x in enumerate(vs[0])}
        writer.write(Sample(key, imgs, {"views": recs[0]}, it.label))
    writer.close()
    return len(items) / (time.perf_counter() - t)


def pipeline(npz, model, n, resolution, views, batch, out_dir, device="cpu", extra=(), family="taesd"):
    """Run gcl-synth in a child; returns (img/s from its manifest, child's peak RSS in MiB)."""
    cmd = [sys.executable, "-m", "gcl.synth.cli", "run", "--no-progress", "--generator", family, "--input", str(npz), "--model", str(model),
           "--output", str(out_dir), "--limit", str(n), "--resolution", str(resolution), "--views", str(views),
           "--batch-size", str(batch), "--device", device, "--shard-size", "1000", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"pipeline failed: {proc.stderr.read().decode()[-2000:]}")
    (mpath,) = Path(out_dir).glob("*.manifest.json")
    return json.loads(mpath.read_text())["throughput"]["images_per_s"], usage.ru_maxrss / 1024


def real_family(family, npz, items, args, tmp, device) -> dict:
    """Model-only bound and the end-to-end pipeline of one real model, back to back."""
    model = REAL_MODELS[family]()
    n = args.images if family == "taesd" else args.esrgan_images
    gen = load_generator(family, str(model), device, torch.float16 if device == "cuda" else torch.float32)
    recipe = parse_recipe(DEFAULT_RECIPES[family])
    images = [resize_center_crop(load_rgb(it)[0], args.resolution) for it in items[:n]]
    keys = [sample_key(it.source) for it in items[:n]]
    res = {"images": n, "model_only_img_s": round(model_only(gen, images, keys, recipe, args.views, args.batch_size), 3)}
    res["pipeline_img_s"], _ = pipeline(npz, model, n, args.resolution, args.views, args.batch_size,
                                        Path(tmp) / f"p-{family}", device, family=family)
    res["pipeline_vs_model_only"] = round(res["pipeline_img_s"] / res["model_only_img_s"], 3)
    res["flops_per_image"] = count_flops(gen, recipe, args.views, args.resolution, 0)
    if family == "taesd":
        res["naive_img_s"] = round(naive(gen, items[: args.naive_images], args.resolution, recipe, args.views,
                                         Path(tmp) / "naive.tar"), 3)
        res["pipeline_vs_naive"] = round(res["pipeline_img_s"] / res["naive_img_s"], 3)
        for size in filter(None, args.rss_sizes.split(",")):
            _, rss = pipeline(npz, model, int(size), args.resolution, args.views, args.batch_size,
                              Path(tmp) / f"rss{size}", device)
            res[f"peak_rss_mib_{size}"] = round(rss, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="taesd,esrgan", help="real models to measure ('' to skip)")
    ap.add_argument("--images", type=int, default=256, help="TAEF2 images for model-only / pipeline")
    ap.add_argument("--esrgan-images", type=int, default=64, help="ESRGAN images (about 8x slower per image)")
    ap.add_argument("--naive-images", type=int, default=64, help="the naive loop is slow: fewer images suffice")
    ap.add_argument("--rss-sizes", default="2000,10000", help="dataset sizes for the peak-RSS check ('' to skip)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "threads": torch.get_num_threads(),
           "resolution": args.resolution, "views": args.views, "batch": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        families = [f for f in args.families.split(",") if f]
        if families:
            npz = resolve_cifar10("train")
            items = list_inputs(npz).items
            for fam in families:
                res[fam] = real_family(fam, npz, items, args, tmp, device)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
