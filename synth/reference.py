"""Is this shard set the published one? Compare a run's manifest with a reference manifest.

Same options and the same kind of device give the same bytes, so equal sha256 per shard is the
first test. Across devices (another CPU's kernels, fp16 on a GPU) bytes differ, so each shard
also carries a *pixel sketch* per member (orig, view0, ...): the 8x8 area thumbnails of its
images, summed with a random sign per sample (from the sample key) and divided by sqrt(n).
Two sets whose images differ by about d grey levels per thumbnail cell have sketches that differ
by about d, while sets made with another seed or recipe differ by tens of levels, so a fixed
tolerance separates "the same images up to float noise" from "other images".
"""

from __future__ import annotations

import hashlib

import numpy as np

SKETCH_SIZE = 8  # thumbnail side: coarse enough to ignore JPEG / float noise, fine enough for content
PIXEL_TOLERANCE = 2.0  # grey levels (0-255) of max sketch difference still called a match
# Options whose change means "another shard set", whatever the pixels say.
COMPARED_OPTIONS = ("generator", "weights_sha256", "recipe", "views", "resolution", "seed", "image_format", "quality")


class PixelSketch:
    """Accumulates one shard's sketch: {member: signed sum of thumbnails}, scaled at the end."""

    def __init__(self):
        self.sums: dict[str, np.ndarray] = {}
        self.count = 0

    def add(self, key: str, members: dict[str, np.ndarray]) -> None:
        sign = 1.0 if hashlib.sha256(key.encode()).digest()[0] & 1 else -1.0
        for name, arr in members.items():
            self.sums[name] = self.sums.get(name, 0.0) + sign * _thumbnail(arr)
        self.count += 1

    def to_json(self) -> dict[str, list[float]]:
        scale = 1.0 / max(1.0, np.sqrt(self.count))
        return {name: [round(float(v), 2) for v in (s * scale).ravel()] for name, s in sorted(self.sums.items())}


def _thumbnail(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (8, 8, 3) float area means (H, W multiples of 8 in gcl-synth)."""
    h, w, c = arr.shape
    k, l = h // SKETCH_SIZE, w // SKETCH_SIZE
    crop = arr[: k * SKETCH_SIZE, : l * SKETCH_SIZE].astype(np.float64)
    return crop.reshape(SKETCH_SIZE, k, SKETCH_SIZE, l, c).mean(axis=(1, 3))


def compare_to_reference(manifest: dict, reference: dict) -> tuple[bool | None, list[str]]:
    """(verdict, report lines). True: identical bytes, or pixel sketches within PIXEL_TOLERANCE.
    False: other options, or other images from the same input. None: not comparable, because the
    reference was made from another copy of the same data (same name and count, other pixels)."""
    changed = [k for k in COMPARED_OPTIONS if _option(manifest, k) != _option(reference, k)]
    mine, theirs = manifest.get("input") or {}, reference.get("input") or {}
    other_input = mine.get("fingerprint") != theirs.get("fingerprint")
    if other_input and not changed and other_copy_of_same_data(mine, theirs):
        return None, other_copy_lines(mine, theirs)
    if other_input:
        changed.append("inputs")
    if changed:
        return False, [f"different options than the reference: {', '.join(changed)}"]
    return _compare_shards(manifest, reference)


def other_copy_of_same_data(mine: dict, theirs: dict) -> bool:
    return all(mine.get(k) == theirs.get(k) for k in ("name", "kind", "count"))


def _describe(inp: dict) -> str:
    fingerprint = str(inp.get("fingerprint") or "?").split("/", 1)[0][:12]
    return f"{inp.get('description') or 'a copy with no description'} (input fingerprint {fingerprint})"


def other_copy_lines(mine: dict, theirs: dict) -> list[str]:
    return [f"the reference was made from another copy of {theirs.get('name')} (other pixels), "
            "so its shards cannot be compared with these; every other option is the same",
            f"reference input: {_describe(theirs)}",
            f"this run's input: {_describe(mine)}",
            "to reproduce the reference byte for byte, pass that copy with --input"]


def _compare_shards(manifest: dict, reference: dict) -> tuple[bool, list[str]]:
    lines, ok = [], True
    ref = {s["index"]: s for s in reference.get("shards", [])}
    identical, close, worst = 0, 0, 0.0
    for shard in manifest.get("shards", []):
        other = ref.get(shard["index"])
        if other is None:
            ok = False
            lines.append(f"shard {shard['index']}: not in the reference")
        elif shard["sha256"] == other["sha256"]:
            identical += 1
        else:
            diff = _sketch_diff(shard.get("pixel_sketch"), other.get("pixel_sketch"))
            if diff is None:
                ok = False
                lines.append(f"shard {shard['index']}: bytes differ and the reference has no pixel sketch to compare")
            else:
                worst = max(worst, diff)
                if diff <= PIXEL_TOLERANCE:
                    close += 1
                else:
                    ok = False
                    lines.append(f"shard {shard['index']}: images differ (pixel sketch max diff {diff:.2f} > {PIXEL_TOLERANCE})")
    n = len(manifest.get("shards", []))
    if len(ref) != n:
        ok = False
        lines.append(f"{n} shards here, {len(ref)} in the reference")
    summary = (f"{identical}/{n} shards byte-identical to the reference, {close} more within {PIXEL_TOLERANCE} grey levels "
               f"(max sketch diff {worst:.2f}; made on {_device(manifest)}, reference on {_device(reference)})")
    if identical < n:
        summary += "; " + why_bytes_differ(manifest, reference)
    return ok, [summary] + lines


def _device(manifest: dict) -> str:
    kind, isa = manifest.get("device_type"), manifest.get("cpu_capability")
    return f"{kind} ({isa})" if isa and kind == "cpu" else str(kind)


def why_bytes_differ(manifest: dict, reference: dict) -> str:
    """Why the same options gave other bytes: float kernels differ across device kinds and across
    CPU vector instruction sets (AVX2 vs AVX-512), which the pixel sketch tolerates."""
    if manifest.get("device_type") != reference.get("device_type"):
        return "another device kind computes other float bytes"
    mine, theirs = manifest.get("cpu_capability"), reference.get("cpu_capability")
    if manifest.get("device_type") == "cpu" and mine and theirs and mine != theirs:
        return f"other CPU vector instructions ({mine} here, {theirs} for the reference) compute other float bytes"
    if manifest.get("device_type") == "cpu" and not (mine and theirs):
        return "other bytes on the same device kind: CPU vector instructions (AVX2 vs AVX-512) or library versions differ"
    if manifest.get("device_type") == "cuda":
        return "other bytes on the same device kind: GPU models or library versions differ"
    return "same device kind and CPU instructions but other bytes: check library versions (torch, pillow)"


def _option(manifest: dict, key: str):
    if key == "recipe":
        return manifest.get("recipe", {}).get("spec")
    if key in ("generator", "weights_sha256"):
        return manifest.get("generator", {}).get("id" if key == "generator" else key)
    return manifest.get(key)


def _sketch_diff(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or set(a) != set(b):
        return None
    return max(float(np.max(np.abs(np.asarray(a[m]) - np.asarray(b[m])))) for m in a)
