"""GPU check 2: TAEF2 and Real-ESRGAN end to end through `gcl-synth run` against a model-only loop.

    python bench/gpu_synth.py --input CIFAR.npz --json out.json --keep-shards DIR [--models DIR]

Per family, on the same first N images, options and recipe (the GPU study's shard sets: 64 px,
residual views; TAEF2 two views of noise(strength=0.5), ESRGAN one view of its preset):
model-only img/s (decoded images already in memory, generate_views batch after batch) and the
pipeline's img/s (a `gcl-synth run` child, read from its manifest: decode, model, encode, tar),
and their ratio (goal >= 0.9). Real weights come from --models (taef2/, realesrgan-x4plus/) when
there, else a random init of the same architecture (same cost). The TAEF2 shards are kept in
--keep-shards for the training check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (children run with PYTHONSAFEPATH=1)
from bench_common import input_images, sync
from family_configs import build
from gcl.synth.generators import load_generator
from gcl.synth.recipe import parse_recipe
from gcl.synth.worker import generate_views

# the GPU study's shard sets (studies/cifar10-gpu/study.yaml): what a real run synthesizes
SETS = {
    "taesd": {"model_dir": "taef2", "recipe": "noise(strength=0.5)", "views": 2},
    "esrgan": {"model_dir": "realesrgan-x4plus", "recipe": "esrgan", "views": 1},
}
RESOLUTION = 64


def model_dir(family: str, models: str | None, tmp: Path) -> tuple[Path, str]:
    if models:
        real = Path(models) / SETS[family]["model_dir"]
        if real.is_dir() and any(real.iterdir()):
            return real, "real"
    return build(family, tmp / f"rand-{family}", full=True), "random init"


def model_only(gen, images, recipe, views: int, batch: int, device: str) -> float:
    keys = [f"k{i:06d}" for i in range(len(images))]
    generate_views(gen, images[:batch], keys[:batch], recipe, views, 0, residual=True)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        generate_views(gen, images[i:i + batch], keys[i:i + batch], recipe, views, 0, residual=True)
    sync(device)
    return len(images) / (time.perf_counter() - t0)


def pipeline(npz: str, model: Path, family: str, n: int, batch: int, out: Path, device: str, dtype: str, log) -> dict:
    s = SETS[family]
    cmd = [sys.executable, "-m", "gcl.synth.cli", "run", "--no-progress", "--generator", family, "--model", str(model),
           "--input", npz, "--output", str(out), "--limit", str(n), "--resolution", str(RESOLUTION),
           "--views", str(s["views"]), "--recipe", s["recipe"], "--residual", "--batch-size", str(batch),
           "--device", device, "--dtype", dtype, "--name", f"bench_{family}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    (manifest,) = out.glob("*.manifest.json")
    tp = json.loads(manifest.read_text())["throughput"]
    return {"pipeline_img_s": tp["images_per_s"], "pipeline_seconds": tp["seconds"], "child_wall_s": round(wall, 1),
            "manifest": str(manifest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="npz of CIFAR-size images")
    ap.add_argument("--json", required=True)
    ap.add_argument("--models", default=None, help="folder holding taef2/ and realesrgan-x4plus/ (else random init)")
    ap.add_argument("--families", default="taesd,esrgan")
    ap.add_argument("--images", type=int, default=4096, help="TAEF2 images (ESRGAN: a quarter)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--keep-shards", default=None, help="move the TAEF2 shard set here (training check input)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dtype = "float16" if args.device == "cuda" else "float32"  # gcl-synth's own default per device
    out = {"device": args.device, "dtype": dtype, "resolution": RESOLUTION, "batch": args.batch_size, "families": {}}
    path = Path(args.json)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for family in [f for f in args.families.split(",") if f]:
            n = args.images if family == "taesd" else max(1, args.images // 4)
            root, weights = model_dir(family, args.models, tmp)
            gen = load_generator(family, str(root), args.device, getattr(torch, dtype))
            images = input_images(args.input, n, RESOLUTION)
            recipe = parse_recipe(SETS[family]["recipe"])
            res = {"weights": weights, "images": n, "views": SETS[family]["views"], "recipe": recipe.spec,
                   "model_only_img_s": round(model_only(gen, images, recipe, SETS[family]["views"], args.batch_size,
                                                        args.device), 2)}
            del gen, images
            if args.device == "cuda":
                torch.cuda.empty_cache()
            with open(tmp / f"synth-{family}.log", "w") as log:
                try:
                    res.update(pipeline(args.input, root, family, n, args.batch_size, tmp / family, args.device, dtype, log))
                except subprocess.CalledProcessError:
                    log.flush()
                    tail = (tmp / f"synth-{family}.log").read_text()[-1500:]
                    raise SystemExit(f"gcl-synth run failed for {family}:\n{tail}")
            res["pipeline_vs_model_only"] = round(res["pipeline_img_s"] / res["model_only_img_s"], 3)
            res.pop("manifest")  # a local path: never in a result file
            if family == "taesd" and args.keep_shards:
                shutil.rmtree(args.keep_shards, ignore_errors=True)
                shutil.move(str(tmp / family), args.keep_shards)
            out["families"][family] = res
            path.write_text(json.dumps(out, indent=1))
            print(family, json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
