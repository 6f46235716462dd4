"""Looking at views: `gcl-eval inspect` (contact sheet of a shard set), `gcl-eval preview`
(run a generator + recipe on a few images and draw the sheet) and `gcl-eval viewstats` (PSNR /
SSIM / feature cosine per op and strength, stored in the manifest).

preview runs `gcl-synth run` as a subprocess into a temporary folder (eval never imports synth:
the apps meet only through shards), then draws the sheet from those shards and deletes them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from gcl.eval.sheet import read_families
from gcl.inputs import InputError
from gcl.io import write_bytes_atomic
from gcl.shardset import OutputLayout

# 8 rows of 1 + 4 views at 128 px is ~700 x 1500 px: one screen, readable without zooming.
DEFAULT_ROWS = 8
# 64 px: TAEF2's latent is 8x8 there (32 dB reconstructions); at 32 px it is 4x4 (24 dB).
DEFAULT_PREVIEW_RESOLUTION = 64
# 200 families x K views are enough for stable means per group (a few seconds on CPU).
DEFAULT_STATS_SAMPLES = 200


def _save_sheet(sheet, out: str) -> None:
    """Atomic: a half-written PNG never replaces a good one."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


@click.command("inspect")
@click.argument("shards")
@click.option("--out", default="sheet.png", show_default=True, help="PNG contact sheet to write.")
@click.option("--rows", type=int, default=DEFAULT_ROWS, show_default=True, help="Images (rows) to show.")
@click.option("--seed", type=int, default=None, help="Random sample of rows over all shards (default: the first rows).")
@click.option("--tile", type=int, default=None, help="Image size in px [default: 4x for 32 px, native up to 256].")
def inspect(shards, out, rows, seed, tile):
    """Contact sheet of SHARDS (a manifest .json, a .tar, or a folder of shards): one row per image,
    the original then its views, each captioned with its ops and strengths."""
    from gcl.eval.sheet import contact_sheet

    if rows < 1:
        raise click.UsageError("--rows must be >= 1")
    skipped: list[str] = []
    fams = read_families(shards, rows, seed, skipped)
    if skipped:
        click.echo(f"skipped {len(skipped)} unusable families (first: {skipped[0][:60]})", err=True)
    if not fams:
        raise InputError(f"{shards}: no readable families to draw")
    sheet, layout = contact_sheet(fams, tile=tile)
    _save_sheet(sheet, out)
    click.echo(f"wrote {out}: {layout.rows} rows x {layout.cols} columns (original + {layout.cols - 1} views), "
               f"{sheet.width}x{sheet.height} px")


@click.command("preview")
@click.option("--generator", "family", default="taesd", show_default=True, help="Generator family (as gcl-synth run).")
@click.option("--model", default=None, help="Model path / hub id [taesd: ../shared/models/taef2 or the cache].")
@click.option("--input", "input_path", required=True, help="Images: npz, ImageFolder or flat folder.")
@click.option("--recipe", default="noise", show_default=True, help="Recipe spec or preset name.")
@click.option("--views", type=int, default=4, show_default=True, help="Views per image (K).")
@click.option("--rows", type=int, default=DEFAULT_ROWS, show_default=True, help="Images to run.")
@click.option("--resolution", type=int, default=DEFAULT_PREVIEW_RESOLUTION, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", default="preview.png", show_default=True)
@click.option("--stats/--no-stats", default=True, show_default=True, help="Also print PSNR/SSIM per op and strength.")
def preview(family, model, input_path, recipe, views, rows, resolution, seed, device, out, stats):
    """Run the generator with RECIPE on a handful of images and write the contact sheet (the
    temporary shards are deleted): tune strengths here before paying for a full run."""
    from gcl.eval.sheet import contact_sheet
    from gcl.eval.viewstats import compute_view_stats, format_stats_table

    if views < 1 or rows < 1:
        raise click.UsageError("--views and --rows must be >= 1")
    with tempfile.TemporaryDirectory(prefix="gcl-preview-") as tmp:
        manifest = synthesize(tmp, generator=family, model=model, input=input_path, recipe=recipe, views=views,
                              limit=rows, resolution=resolution, seed=seed, device=device, batch_size=rows)
        fams = read_families(manifest, rows)
    sheet, layout = contact_sheet(fams)
    _save_sheet(sheet, out)
    click.echo(f"wrote {out}: {layout.rows} images x {views} views at {resolution} px ({sheet.width}x{sheet.height} px)")
    if stats:
        click.echo(format_stats_table(compute_view_stats(fams)))


def synthesize(out_dir: str, **options) -> str:
    """`gcl-synth run` in a subprocess with these options; returns the manifest path.

    Its one-line error (a bad recipe, a missing model) becomes ours, so the user sees the same
    message as from gcl-synth itself.
    """
    argv = [sys.executable, "-m", "gcl.synth.cli", "run", "--output", out_dir, "--name", "preview", "--no-progress"]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise click.ClickException(lines[-1].removeprefix("Error: ") if lines else "gcl-synth run failed")
    return OutputLayout(out_dir, "preview").manifest


@click.command("viewstats")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--ckpt", default=None, type=click.Path(exists=True),
              help="Encoder checkpoint (or run folder): adds the cosine similarity of its features.")
@click.option("--samples", type=int, default=DEFAULT_STATS_SAMPLES, show_default=True,
              help="Images (with all their views) sampled over the shard set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--bin-width", type=float, default=0.1, show_default=True, help="Strength bin width.")
@click.option("--no-store", is_flag=True, help="Print only; do not write 'view_stats' into the manifest.")
def viewstats(manifest, ckpt, samples, seed, bin_width, no_store):
    """PSNR / SSIM (and feature cosine with --ckpt) of views against their originals, per op and
    strength; printed as a table and stored in MANIFEST under 'view_stats'."""
    from gcl.eval.viewstats import compute_view_stats, format_stats_table, store_in_manifest

    if not manifest.endswith(".json"):
        raise click.UsageError("MANIFEST must be a manifest .json (the stats are stored in it)")
    if samples < 1 or bin_width <= 0:
        raise click.UsageError("--samples must be >= 1 and --bin-width > 0")
    encoder = None
    if ckpt:
        from gcl.eval.features import checkpoint_encoder

        encoder = checkpoint_encoder(ckpt)
    fams = read_families(manifest, samples, seed)
    stats = compute_view_stats(fams, encoder, bin_width)
    stats["samples_requested"], stats["seed"] = samples, seed
    click.echo(format_stats_table(stats))
    if not no_store:
        store_in_manifest(manifest, stats)
        click.echo(f"stored under 'view_stats' in {manifest}", err=True)
