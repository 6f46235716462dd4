"""Contact sheets of view families: one row per image, the original then its generated views,
each view captioned with its ops and strengths. Also reads families from shards/manifests.
"""

from __future__ import annotations

import glob
import os
import random
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gcl.inputs import InputError
from gcl.shards import ORIG, FamilyError, ShardReadError, decode_image, family_members, iter_samples, parse_family
from gcl.shardset import open_shard_set
from gcl.streams import open_stream

PAD = 8  # gap between cells and around the sheet (px)
FONT_SIZE = 13  # readable at 100% zoom; ~7 px per character with Pillow's default font
LINE_GAP = 3  # extra px between caption lines
MIN_TILE = 128  # small images (CIFAR 32 px) are upscaled 4x with nearest so artefacts stay visible
MAX_TILE = 256  # large images are shrunk so a sheet of 8 views stays under ~2300 px wide
# Short names for the most common parameters, so a caption fits under a 128 px tile.
PARAM_ABBREV = {"strength": "s", "ratio": "r", "scale": "sc", "steps": "st"}
BG, FG, SUBTLE = (255, 255, 255), (20, 20, 20), (110, 110, 110)


@dataclass
class Family:
    key: str
    orig: np.ndarray  # (H, W, 3) uint8
    views: list[np.ndarray]
    records: list[dict]  # per view: {"view", "seed", "ops": [...]} (empty dict when unknown)
    meta: dict = field(default_factory=dict)
    label: int | None = None


def shard_paths(path: str) -> list[str]:
    """The shards (local paths or store URLs) of a manifest (.json, on disk or at a URL), a .tar
    (pattern), or a folder of .tar files."""
    return open_shard_set(path).urls


def _iter_raw(path: str) -> Iterator[dict]:
    """Raw tar sample dicts (undecoded bytes) of every family that has an original, each shard
    streamed once (gcl.streams: bounded waits for store URLs); a shard that cannot be read is one
    line naming it."""
    for url in shard_paths(path):
        try:
            with open_stream(url) as stream:
                for raw in iter_samples(stream):
                    if "__problem__" in raw or any(k.startswith(ORIG + ".") for k in raw):
                        yield raw
        except (OSError, ShardReadError) as exc:
            raise InputError(f"cannot read shard {url}: {exc}") from None


def _decode(raw: dict) -> Family:
    members, meta, label = parse_family(raw)
    _, views = family_members(members)
    records = meta.get("views")
    recs = {r["view"]: r for r in records if isinstance(r, dict) and isinstance(r.get("view"), int)} \
        if isinstance(records, list) else {}
    return Family(
        key=raw["__key__"],
        orig=np.asarray(decode_image(members[ORIG]), dtype=np.uint8),
        views=[np.asarray(decode_image(members[v]), dtype=np.uint8) for v in views],
        records=[recs.get(int(v[4:]), {}) for v in views],
        meta=meta,
        label=label,
    )


def _decoded(raw: dict, skipped: list) -> Family | None:
    """The family, or None (and its key in `skipped`) when a member, its metadata or its label is unusable."""
    try:
        return _decode(raw)
    except (FamilyError, ShardReadError, OSError, ValueError):
        skipped.append(raw.get("__key__", "?"))
        return None


def iter_families(path: str, skipped: list | None = None) -> Iterator[Family]:
    skipped = [] if skipped is None else skipped
    for raw in _iter_raw(path):
        fam = _decoded(raw, skipped)
        if fam is not None:
            yield fam


def read_families(path: str, n: int, seed: int | None = None, skipped: list | None = None) -> list[Family]:
    """The first n families, or (with a seed) a uniform reservoir sample over all of them; the keys
    of unusable families go to `skipped`.

    Sampling reads every tar but decodes only the n chosen families.
    """
    skipped = [] if skipped is None else skipped
    if seed is None:
        out = []
        for fam in iter_families(path, skipped):
            out.append(fam)
            if len(out) >= n:
                break
        return out
    rng = random.Random(seed)
    sample: list[dict] = []
    for i, raw in enumerate(_iter_raw(path)):
        if i < n:
            sample.append(raw)
        else:
            j = rng.randint(0, i)
            if j < n:
                sample[j] = raw
    return [fam for fam in (_decoded(raw, skipped) for raw in sample) if fam is not None]


def format_op(op: dict) -> str:
    """{'op': 'noise', 'strength': 0.534} -> 'noise s=0.53'."""
    from gcl.eval.viewstats import PRIMARY_PARAMS

    parts = [str(op.get("op", "?"))]
    # The strength-like parameter first ("mask r=0.28 fill=noise"), the rest in stored order.
    order = sorted((k for k in op if k != "op"), key=lambda k: PRIMARY_PARAMS.index(k) if k in PRIMARY_PARAMS else 99)
    for k in order:
        v = op[k]
        if isinstance(v, float):
            v = f"{v:.2f}"
        elif isinstance(v, str) and len(v) > 12:  # e.g. mix's partner key: its hash tail is enough
            v = "…" + v[-8:]
        parts.append(f"{PARAM_ABBREV.get(k, k)}={v}")
    return " ".join(parts)


def view_caption(record: dict) -> list[str]:
    """One line per op (in order of application); 'no ops' for an unaugmented view."""
    ops = record.get("ops") if record else None
    if not isinstance(ops, list):  # absent, or not what gcl-synth writes (a shard from elsewhere)
        return ["(no record)"]
    return [format_op(op) if isinstance(op, dict) else "?" for op in ops] or ["no ops"]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _wrap(lines: list[str], font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap of each line to `width` px."""
    out = []
    for line in lines:
        cur = ""
        for word in line.split(" "):
            trial = f"{cur} {word}".strip()
            if cur and draw.textlength(trial, font=font) > width:
                out.append(cur)
                cur = "  " + word
            else:
                cur = trial
        out.append(cur)
    return out


def _clip(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> str:
    """Shorten from the left ('…' + tail) until it fits: keys end in their unique hash."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


@dataclass
class SheetLayout:
    rows: int
    cols: int  # 1 (original) + number of views
    tile: int
    caption_lines: int
    font_size: int = FONT_SIZE

    @property
    def line_h(self) -> int:
        return self.font_size + LINE_GAP

    @property
    def header_h(self) -> int:
        return PAD + self.line_h

    @property
    def cell_w(self) -> int:
        return self.tile

    @property
    def cell_h(self) -> int:
        return self.tile + 4 + self.caption_lines * self.line_h

    @property
    def size(self) -> tuple[int, int]:
        return (PAD + self.cols * (self.cell_w + PAD), self.header_h + self.rows * (self.cell_h + PAD) + PAD)

    def image_box(self, r: int, c: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image in row r, column c (column 0 is the original)."""
        x0 = PAD + c * (self.cell_w + PAD)
        y0 = self.header_h + PAD + r * (self.cell_h + PAD)
        return x0, y0, x0 + self.tile, y0 + self.tile


def default_tile(native: int) -> int:
    if native >= MIN_TILE:
        return min(native, MAX_TILE)
    return native * max(1, MIN_TILE // native)  # integer nearest-neighbour upscale


def _fit(arr: np.ndarray, tile: int) -> Image.Image:
    img = Image.fromarray(arr)
    if img.size == (tile, tile):
        return img
    up = img.width < tile and img.height < tile
    scale = tile / max(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.NEAREST if up else Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (tile, tile), BG)
    canvas.paste(img, ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return canvas


def contact_sheet(families: list[Family], tile: int | None = None, font_size: int = FONT_SIZE,
                  title: str | None = None) -> tuple[Image.Image, SheetLayout]:
    """Render the sheet; returns (image, layout) so callers/tests can locate every cell."""
    if not families:
        raise InputError("no view families to show")
    tile = tile or default_tile(max(families[0].orig.shape[:2]))
    cols = 1 + max(len(f.views) for f in families)
    font = _font(font_size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = []
    for f in families:
        head = [str(f.meta.get("class_name") or (f"class {f.label}" if f.label is not None else "")), f.key]
        row = [[_clip(h, font, tile, scratch) for h in head if h]]
        row += [_wrap(view_caption(rec), font, tile, scratch) for rec in f.records]
        captions.append(row)
    layout = SheetLayout(len(families), cols, tile, max(len(c) for row in captions for c in row), font_size)
    sheet = Image.new("RGB", layout.size, BG)
    draw = ImageDraw.Draw(sheet)
    header = ["original"] + [f"view {i}" for i in range(cols - 1)]
    if title:
        header[0] = title if draw.textlength(title, font=font) <= tile else header[0]
    for c, text in enumerate(header):
        x0, _, _, _ = layout.image_box(0, c)
        draw.text((x0, PAD // 2), text, fill=FG, font=font)
    for r, f in enumerate(families):
        for c, (arr, lines) in enumerate(zip([f.orig] + f.views, captions[r])):
            x0, y0, x1, y1 = layout.image_box(r, c)
            sheet.paste(_fit(arr, tile), (x0, y0))
            for i, line in enumerate(lines):
                # The first line of the original's caption (class) in black, the key in grey.
                color = SUBTLE if (c == 0 and i > 0) else FG
                draw.text((x0, y1 + 4 + i * layout.line_h), line, fill=color, font=font)
    return sheet, layout
