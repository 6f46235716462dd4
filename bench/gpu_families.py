"""GPU check 1: every generator family at its published size (random init), in fp16 and bf16.

    python bench/gpu_families.py --json out.json                      # GPU: 256 px, published sizes
    python bench/gpu_families.py --json out.json --toy --resolution 32 --batch-size 2   # CPU rehearsal

Per family and precision: images/s (one view per image, the family's default recipe, through
synth's generate_views), GFLOP per image (FlopCounterMode), the share of the dense bf16 matmul
peak measured at the start of this same process, peak GPU memory, and the half-precision view
against the fp32 view of the same weights, images and seeds (PSNR in dB, NaN count). The JSON is
rewritten after every family, so a run cut off by its time limit keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (children run with PYTHONSAFEPATH=1)
from bench_common import input_images, matmul_peak, sync
from family_configs import BUILDERS, build
from gcl.synth.augment import augment_latents
from gcl.synth.generators import DEFAULT_RECIPES, load_generator
from gcl.synth.recipe import parse_recipe
from gcl.synth.worker import count_flops, generate_views, render, to_tensor

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}
COMPARE_IMAGES = 4  # images whose half-precision view is compared with the fp32 view
# toy sizes only: the toy SD UNet downsamples its f8 latent once more, and GroupNorm needs > 1 pixel
TOY_MIN_RESOLUTION = {"diffusion": 32}


@torch.inference_mode()
def view_float(gen, images, keys, recipe) -> torch.Tensor:
    """View 0 of each image as floats before the uint8 cast (NaNs still visible), on the CPU."""
    z, recs = augment_latents(gen, gen.encode(to_tensor(images)), keys, recipe, 0, 0)
    return render(gen, z, recs).float().cpu()


def compare(half: torch.Tensor, ref: torch.Tensor) -> dict:
    nans = int(torch.isnan(half).sum())
    a = half.nan_to_num(0.0).clamp(0, 1).mul(255).round()
    b = ref.nan_to_num(0.0).clamp(0, 1).mul(255).round()
    mse = float((a - b).pow(2).mean())
    return {"psnr_vs_fp32_db": round(10 * math.log10(255 ** 2 / mse), 2) if mse > 0 else None, "nan_count": nans,
            "identical_to_fp32": mse == 0}


def images_per_s(gen, images, keys, recipe, iters: int, budget_s: float, device: str) -> tuple[float, int]:
    """Timed batches after one warm-up batch: up to `iters`, fewer when the budget runs out."""
    generate_views(gen, images, keys, recipe, 1, 0)
    sync(device)
    t0, done = time.perf_counter(), 0
    while done < iters and (done == 0 or time.perf_counter() - t0 < budget_s):
        generate_views(gen, images, keys, recipe, 1, done + 1)
        done += 1
    sync(device)
    return len(images) * done / (time.perf_counter() - t0), done


def one_family(family: str, root: Path, args, peak_flops: float | None) -> dict:
    recipe = parse_recipe(DEFAULT_RECIPES[family])
    resolution = max(args.resolution, TOY_MIN_RESOLUTION.get(family, 0)) if args.toy else args.resolution
    images = input_images(args.input, args.batch_size, resolution)
    keys = [f"bench-{i}" for i in range(len(images))]
    few, few_keys = images[:COMPARE_IMAGES], keys[:COMPARE_IMAGES]
    gen = load_generator(family, str(root), args.device, torch.float32)
    res = {"arch": gen.extra.get("arch", family), "recipe": recipe.spec, "resolution": resolution,
           "params_m": round(sum(p.numel() for m in _modules(gen) for p in m.parameters()) / 1e6, 1)}
    ref = view_float(gen, few, few_keys, recipe)
    del gen
    _free(args.device)
    for name, dtype in PRECISIONS.items():
        t0 = time.perf_counter()
        try:
            gen = load_generator(family, str(root), args.device, dtype)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ips, batches = images_per_s(gen, images, keys, recipe, args.iters, args.time_per_precision, args.device)
            flops = count_flops(gen, recipe, 1, resolution, 0)
            row = {"img_s": float(f"{ips:.4g}"), "timed_batches": batches, "gflops_per_image": float(f"{flops / 1e9:.4g}")}
            if peak_flops:
                row["share_of_bf16_peak"] = float(f"{flops * ips / peak_flops:.4g}")
            if args.device == "cuda":
                row["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
            row.update(compare(view_float(gen, few, few_keys, recipe), ref))
            del gen
        except Exception as exc:  # noqa: BLE001 - one precision failing must not hide the others
            row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        res[name] = row
        _free(args.device)
    return res


def _modules(gen) -> list[torch.nn.Module]:
    return [v for v in vars(gen).values() if isinstance(v, torch.nn.Module)]


def _free(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="results file (rewritten after each family)")
    ap.add_argument("--families", default="taesd,esrgan,vqgan,mae,maskgit,diffusion", help="in priority order")
    ap.add_argument("--toy", action="store_true", help="toy model sizes (CPU rehearsal)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5, help="timed batches per family and precision (at most)")
    ap.add_argument("--time-per-precision", type=float, default=6.0, help="seconds of timed batches (at most)")
    ap.add_argument("--input", default=None, help="npz of images (resized to --resolution); default: random images")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-size", type=int, default=8192, help="n of the n x n x n bf16 matmul that measures the peak")
    args = ap.parse_args()
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(BUILDERS))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; known: {sorted(BUILDERS)}")
    out = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "resolution": args.resolution,
           "batch": args.batch_size, "model_sizes": "toy" if args.toy else "published", "weights": "random init",
           "families": {}}
    peak = matmul_peak(args.device, torch.bfloat16, args.peak_size)
    out["bf16_matmul_peak_tflops"] = float(f"{peak / 1e12:.4g}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    with tempfile.TemporaryDirectory() as tmp:
        for fam in families:
            t0 = time.perf_counter()
            torch.manual_seed(0)
            try:
                res = one_family(fam, build(fam, Path(tmp) / fam, full=not args.toy), args, peak)
            except Exception as exc:  # noqa: BLE001 - record it and go on to the next family
                res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
            res["seconds"] = round(time.perf_counter() - t0, 1)
            out["families"][fam] = res
            path.write_text(json.dumps(out, indent=1))
            print(fam, json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
