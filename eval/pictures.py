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
from gcl.io import write_bytes_atomic, write_json_atomic
from gcl.shardset import OutputLayout
from gcl.synthconfig import SynthConfigError, parse_synth_config

# 8 rows of 1 + 4 views at 128 px is ~700 x 1500 px: one screen, readable without zooming.
DEFAULT_ROWS = 8
# 64 px: TAEF2's latent is 8x8 there (32 dB reconstructions); at 32 px it is 4x4 (24 dB).
DEFAULT_PREVIEW_RESOLUTION = 64
# preview has no run or shard folder of its own: its picture goes to this gitignored folder.
PREVIEW_FOLDER = "out/preview"
# 200 families x K views are enough for stable means per group (a few seconds on CPU).
DEFAULT_STATS_SAMPLES = 200


def _save_sheet(sheet, out: str) -> None:
    """Atomic: a half-written PNG never replaces a good one."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def png_path(output: str | None, default_folder: str | None, name: str) -> str:
    """--output: a folder (the PNG gets `name`) or a .png path; without it, `name` in default_folder."""
    if output:
        return output if output.lower().endswith(".png") else os.path.join(output, name)
    if default_folder is None:
        raise click.UsageError("these shards are not local: pass --output FOLDER for the picture")
    return os.path.join(default_folder, name)


def _shard_folder(shards: str) -> str | None:
    """The folder that holds a shard set's (local) shards: where its pictures go by default."""
    from gcl.eval.sheet import shard_paths

    try:
        first = shard_paths(shards)[0]
        return None if "://" in first else (os.path.dirname(first) or ".")  # a store: --output says where
    except Exception:  # noqa: BLE001 - read_families reports an unreadable spec as the user error it is
        return None


@click.command("inspect")
@click.argument("shards")
@click.option("--output", default=None, help="Folder for sheet.png, or a .png path [default: the shards' folder].")
@click.option("--out", "old_out", default=None, hidden=True)
@click.option("--rows", type=click.IntRange(1), default=DEFAULT_ROWS, show_default=True, help="Images (rows) to show.")
@click.option("--seed", type=int, default=None, help="Random sample of rows over all shards (default: the first rows).")
@click.option("--tile", type=click.IntRange(8), default=None, help="Image size in px [default: 4x for 32 px, native up to 256].")
def inspect(shards, output, old_out, rows, seed, tile):
    """Contact sheet of SHARDS (a manifest .json, a .tar pattern, or a folder of shards): one row per image,
    the original then its views, each captioned with its ops and strengths."""
    from gcl.eval.sheet import contact_sheet

    skipped: list[str] = []
    fams = read_families(shards, rows, seed, skipped)
    if skipped:
        click.echo(f"skipped {len(skipped)} unusable families (first: {skipped[0][:60]})", err=True)
    if not fams:
        raise InputError(f"{shards}: no readable families to draw")
    out = png_path(output or old_out, _shard_folder(shards), "sheet.png")
    sheet, layout = contact_sheet(fams, tile=tile)
    _save_sheet(sheet, out)
    click.echo(f"wrote {out}: {layout.rows} rows x {layout.cols} columns (original + {layout.cols - 1} views), "
               f"{sheet.width}x{sheet.height} px")


@click.command("preview")
@click.option("--generator", "family", default="taesd", show_default=True,
              help="Generator family, as gcl-synth run (taesd or its alias taef2, vqgan, esrgan, ...).")
@click.option("--model", default=None, help="Model path / hub id [default: the family's, as gcl-synth run].")
@click.option("--input", "input_path", default=None, help="Images: npz, ImageFolder or flat folder [default: CIFAR-10 "
              "train, as gcl-synth run].")
@click.option("--recipe", default=None, help="Latent recipe spec or preset name [default: the generator's preset, as "
              "gcl-synth run].")
@click.option("--views", type=click.IntRange(1), default=4, show_default=True,
              help="Views per image (K). More than gcl-synth run's 2: a sheet shows the spread of a recipe.")
@click.option("--rows", type=click.IntRange(1), default=DEFAULT_ROWS, show_default=True, help="Images to run.")
@click.option("--resolution", type=click.IntRange(8), default=DEFAULT_PREVIEW_RESOLUTION, show_default=True,
              help="Synthesis size in px.")
@click.option("--seed", type=int, default=0, show_default=True, help="Global seed, as gcl-synth run.")
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda if present), cpu, cuda, cuda:N, as gcl-synth run.")
@click.option("--output", default=PREVIEW_FOLDER, show_default=True, help="Folder for preview.png, or a .png path.")
@click.option("--out", "old_out", default=None, hidden=True)
@click.option("--stats/--no-stats", default=True, show_default=True, help="Also print PSNR/SSIM per op and strength.")
def preview(family, model, input_path, recipe, views, rows, resolution, seed, device, output, old_out, stats):
    """Run the generator with RECIPE on a handful of images and write the contact sheet (the
    temporary shards are deleted): tune strengths here before paying for a full run."""
    from gcl.eval.sheet import contact_sheet
    from gcl.eval.viewstats import compute_view_stats, format_stats_table

    out = png_path(old_out or output, None, "preview.png")
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
    """`gcl-synth run` in a subprocess with these options (None: gcl-synth's default); returns the
    manifest path.

    The options go as a --config file, typed by gcl-synth's own schema (gcl.synthconfig), so a
    value is never read as a flag. gcl-synth's one-line error (a bad recipe, a missing model)
    becomes ours, so the user sees the same message as from gcl-synth itself.
    """
    try:
        config = parse_synth_config({k: v for k, v in options.items() if v is not None}, "preview options")
    except SynthConfigError as exc:
        raise click.ClickException(str(exc)) from None
    config_file = Path(out_dir) / "preview-config.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_file, config.given())
    argv = [sys.executable, "-m", "gcl.synth.cli", "run", f"--config={config_file}", f"--output={out_dir}",
            "--name=preview", "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise click.ClickException(lines[-1].removeprefix("Error: ") if lines else "gcl-synth run failed")
    return OutputLayout(out_dir, "preview").manifest


@click.command("viewstats")
@click.argument("manifest")
@click.option("--ckpt", default=None, type=click.Path(exists=True),
              help="Encoder checkpoint (or run folder): adds the cosine similarity of its features.")
@click.option("--samples", type=int, default=DEFAULT_STATS_SAMPLES, show_default=True,
              help="Images (with all their views) sampled over the shard set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--bin-width", type=float, default=0.1, show_default=True, help="Strength bin width.")
@click.option("--no-store", is_flag=True, help="Print only; do not write 'view_stats' into the manifest.")
def viewstats(manifest, ckpt, samples, seed, bin_width, no_store):
    """PSNR / SSIM (and feature cosine with --ckpt) of views against their originals, per op and
    strength; printed as a table and stored in MANIFEST (a .json, or a shard folder holding one)
    under 'view_stats'."""
    from gcl.eval.viewstats import compute_view_stats, format_stats_table, store_in_manifest
    from gcl.shardset import folder_manifest

    if "://" not in manifest and not os.path.exists(manifest):
        raise click.UsageError(f"{manifest} does not exist")
    manifest = folder_manifest(manifest) or manifest
    if "://" in manifest and not no_store:
        raise click.UsageError(f"{manifest} is read from a store and not rewritten here: pass --no-store to print "
                               "the stats only")
    if not manifest.endswith(".json"):
        raise click.UsageError("MANIFEST must be a manifest .json, or a shard folder holding one (the stats are "
                               "stored in it)")
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
