"""How far each recipe moves a view from its source: PSNR, SSIM and (optionally) the cosine
similarity of an encoder's features, grouped by op and strength over a sample of a shard set.

PSNR of identical images is infinite (MSE 0). `psnr()` returns min(value, cap) with
PSNR_CAP = 100 dB by default, so tables and JSON stay finite; pass cap=None to get inf.
(100 dB is far above anything a real view reaches: 8-bit rounding alone caps near 59 dB.)
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

PSNR_CAP = 100.0  # dB reported for identical images (true value: +inf)
BIN_WIDTH = 0.1  # strengths/ratios are grouped into [0.0,0.1), [0.1,0.2), ...
# Which numeric parameter of an op is its "strength", in order of preference.
PRIMARY_PARAMS = ("strength", "ratio", "sigma", "scale", "amount")
# Per-view details that are not part of the recipe (e.g. mix records its partner sample's key).
NOT_IN_KEY = ("partner",)


def psnr(a: np.ndarray, b: np.ndarray, cap: float | None = PSNR_CAP) -> float:
    """PSNR in dB of two uint8 images (data range 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    value = math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
    return value if cap is None else min(value, cap)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over RGB (skimage, Gaussian-free 7x7 window; smaller for tiny images)."""
    from skimage.metrics import structural_similarity

    win = min(7, min(a.shape[:2]))
    win -= 1 - win % 2  # odd window
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, win_size=win))


def _bin(v: float, width: float) -> str:
    lo = math.floor(v / width + 1e-9) * width
    return f"{lo:.2f}-{lo + width:.2f}"


def group_key(record: dict, width: float = BIN_WIDTH) -> str:
    """'noise s 0.50-0.60 + mask r 0.20-0.30 fill=noise': ops in order, primary param binned.

    Other numeric params are left out of the key (they would split groups into singletons);
    string params (e.g. fill) name a variant of the op and are kept.
    """
    ops = record.get("ops") if record else None
    if ops is None:
        return "(no record)"
    parts = []
    for op in ops:
        name = str(op.get("op", "?"))
        primary = next((p for p in PRIMARY_PARAMS if isinstance(op.get(p), (int, float))
                        and not isinstance(op.get(p), bool)), None)
        if primary:
            name += f" {primary} {_bin(float(op[primary]), width)}"
        name += "".join(f" {k}={v}" for k, v in op.items() if k != "op" and k not in NOT_IN_KEY and isinstance(v, str))
        parts.append(name)
    return " + ".join(parts) or "identity"


def compute_view_stats(families, encoder=None, width: float = BIN_WIDTH) -> dict:
    """Stats per group over the given families; `encoder` is a gcl.eval.features.Encoder or None."""
    import torch.nn.functional as F

    per_group: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    n_fam = 0
    for fam in families:
        n_fam += 1
        cos = None
        if encoder is not None and fam.views:
            same = [v for v in fam.views if v.shape == fam.orig.shape]
            if len(same) == len(fam.views):
                feats = encoder.forward(np.stack([fam.orig] + fam.views))
                cos = F.cosine_similarity(feats[:1], feats[1:], dim=1).tolist()
        for i, (view, rec) in enumerate(zip(fam.views, fam.records)):
            g = per_group[group_key(rec, width)]
            if view.shape != fam.orig.shape:
                g["size_mismatch"].append(1.0)
                continue
            g["psnr"].append(psnr(fam.orig, view))
            g["ssim"].append(ssim(fam.orig, view))
            if cos is not None:
                g["cosine"].append(cos[i])
    groups = []
    for key in sorted(per_group):
        vals = per_group[key]
        row = {"group": key, "n": len(vals["psnr"])}
        for m in ("psnr", "ssim", "cosine"):
            if vals.get(m):
                arr = np.asarray(vals[m])
                row[f"{m}_mean"] = round(float(arr.mean()), 4)
                row[f"{m}_std"] = round(float(arr.std()), 4)
        if vals.get("size_mismatch"):
            row["size_mismatch"] = len(vals["size_mismatch"])
        groups.append(row)
    return {
        "families": n_fam,
        "views": sum(g["n"] for g in groups),
        "bin_width": width,
        "psnr_cap_db": PSNR_CAP,
        "encoder": encoder.describe if encoder is not None else None,
        "computed": time.strftime("%Y-%m-%d %H:%M:%S"),
        "groups": groups,
    }


def format_stats_table(stats: dict) -> str:
    has_cos = any("cosine_mean" in g for g in stats["groups"])
    head = ["op / strength", "n", "PSNR dB", "SSIM"] + (["feat cos"] if has_cos else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for g in stats["groups"]:
        row = [g["group"], str(g["n"]),
               f"{g['psnr_mean']:.2f} ± {g['psnr_std']:.2f}" if "psnr_mean" in g else "-",
               f"{g['ssim_mean']:.3f} ± {g['ssim_std']:.3f}" if "ssim_mean" in g else "-"]
        if has_cos:
            row.append(f"{g['cosine_mean']:.3f} ± {g['cosine_std']:.3f}" if "cosine_mean" in g else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append(f"\n{stats['views']} views of {stats['families']} images; PSNR capped at "
                 f"{stats['psnr_cap_db']:.0f} dB for identical images" + (f"; encoder {stats['encoder']}" if has_cos else ""))
    return "\n".join(lines)


def store_in_manifest(manifest_path: str, stats: dict) -> None:
    """Put the stats under the manifest's top-level "view_stats" key (atomic; other fields kept)."""
    from gcl.manifest import load_manifest
    from gcl.io import write_json_atomic

    data = load_manifest(manifest_path)
    data["view_stats"] = stats
    write_json_atomic(manifest_path, data)
