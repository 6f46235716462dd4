"""Synthesis throughput, measured in one run so that the ratios are fair on a noisy machine.

    python bench/synth_throughput.py                     # CPU, TAEF2, 64 px, K=2
    python bench/synth_throughput.py --rss-sizes 2000,10000

Prints: model-only img/s (encode + augment + decode on preloaded tensors, same batch and size),
end-to-end pipeline img/s (`gcl-synth run` in a subprocess, read from its manifest), a naive
loop (one image at a time: decode -> model -> encode -> write, in series), their ratios, and
the pipeline's peak RSS for each dataset size (it must stay flat). On a GPU it also runs a
full-size random-init VQGAN f16 (the aMUSEd VQ-GAN config, 256 px, fp16) against its FLOP floor.
Targets (CPU, TAEF2, 64 px, K=2): pipeline >= 0.90 x model-only, >= 3 x naive; RSS < 4 GiB.
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

from gcl.synth.augment import parse_recipe
from gcl.synth.defaults import resolve_cifar10, resolve_taef2
from gcl.synth.generators import load_generator
from gcl.inputs import list_inputs, load_rgb, resize_center_crop
from gcl.shards import Sample, ShardWriter, encode_image, sample_key
from gcl.synth.worker import generate_views

AMUSED_VQ_GFLOPS = 694.0  # encode + decode per 256 px image (issue figure)
H100_H200_FP16_DENSE_TFLOPS = 989.0  # tensor-core peak without sparsity


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


def pipeline(npz, model, n, resolution, views, batch, out_dir, device="cpu", extra=()):
    """Run gcl-synth in a child; returns (img/s from its manifest, child's peak RSS in MiB)."""
    cmd = [sys.executable, "-m", "gcl.synth.cli", "run", "--no-progress", "--input", str(npz), "--model", str(model),
           "--output", str(out_dir), "--limit", str(n), "--resolution", str(resolution), "--views", str(views),
           "--batch-size", str(batch), "--device", device, "--shard-size", "1000", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"pipeline failed: {proc.stderr.read().decode()[-2000:]}")
    (mpath,) = Path(out_dir).glob("*.manifest.json")
    return json.loads(mpath.read_text())["throughput"]["images_per_s"], usage.ru_maxrss / 1024


def amused_vqgan_gpu(out: dict, batch: int = 32, iters: int = 10) -> None:
    from diffusers import VQModel

    from gcl.synth.generators.vqgan import VQGANGenerator

    torch.manual_seed(0)
    vq = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
                 up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(128, 256, 256, 512, 768),
                 layers_per_block=2, latent_channels=64, num_vq_embeddings=8192, vq_embed_dim=64,
                 norm_num_groups=32, mid_block_add_attention=False, lookup_from_codebook=True, force_upcast=False)
    with tempfile.TemporaryDirectory() as d:
        vq.save_pretrained(d)
        gen = load_generator("vqgan", d, "cuda", torch.float16)
        assert isinstance(gen, VQGANGenerator)
        x = torch.rand(batch, 3, 256, 256, device="cuda")
        with torch.inference_mode():
            for _ in range(2):
                gen.decode(gen.encode(x))
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(iters):
                gen.decode(gen.encode(x))
            torch.cuda.synchronize()
        ips = batch * iters / (time.perf_counter() - t)
        floor = H100_H200_FP16_DENSE_TFLOPS * 1e3 / AMUSED_VQ_GFLOPS
        out["gpu_vqgan_f16"] = {"model_only_img_s": round(ips, 1), "flop_floor_img_s": round(floor, 1),
                                "fraction_of_floor": round(ips / floor, 3), "gpu": torch.cuda.get_device_name()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256, help="images for the model-only / pipeline / naive comparison")
    ap.add_argument("--naive-images", type=int, default=64, help="the naive loop is slow: fewer images suffice")
    ap.add_argument("--rss-sizes", default="2000,10000", help="dataset sizes for the peak-RSS check ('' to skip)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    npz, model = resolve_cifar10("train"), resolve_taef2()
    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = load_generator("taesd", str(model), device, torch.float16 if device == "cuda" else torch.float32)
    recipe = parse_recipe("noise")
    items = list_inputs(npz).items
    images = [resize_center_crop(load_rgb(it)[0], args.resolution) for it in items[: args.images]]
    keys = [sample_key(it.source) for it in items[: args.images]]
    res = {"device": device, "threads": torch.get_num_threads(), "resolution": args.resolution, "views": args.views,
           "batch": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        res["model_only_img_s"] = round(model_only(gen, images, keys, recipe, args.views, args.batch_size), 3)
        res["pipeline_img_s"], _ = pipeline(npz, model, args.images, args.resolution, args.views, args.batch_size,
                                            Path(tmp) / "p", device)
        res["naive_img_s"] = round(naive(gen, items[: args.naive_images], args.resolution, recipe, args.views, Path(tmp) / "naive.tar"), 3)
        res["pipeline_vs_model_only"] = round(res["pipeline_img_s"] / res["model_only_img_s"], 3)
        res["pipeline_vs_naive"] = round(res["pipeline_img_s"] / res["naive_img_s"], 3)
        for n in filter(None, args.rss_sizes.split(",")):
            _, rss = pipeline(npz, model, int(n), args.resolution, args.views, args.batch_size, Path(tmp) / f"rss{n}", device)
            res[f"peak_rss_mib_{n}"] = round(rss, 1)
    if torch.cuda.is_available():
        amused_vqgan_gpu(res)
    for k, v in res.items():
        print(f"{k:28s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
