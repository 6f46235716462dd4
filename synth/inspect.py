"""Looking at views: `gcl-synth inspect` (contact sheet of a shard set), `gcl-synth preview`
(run a generator + recipe on a few images and draw the sheet, no shards written) and
`gcl-synth viewstats` (PSNR / SSIM / feature cosine per op and strength, stored in the manifest).

The lead registers these in gcl.synth.cli's group with main.add_command(...).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

# 8 rows of 1 + 4 views at 128 px is ~700 x 1500 px: one screen, readable without zooming.
DEFAULT_ROWS = 8
# 64 px: TAEF2's latent is 8x8 there (32 dB reconstructions); at 32 px it is 4x4 (24 dB).
DEFAULT_PREVIEW_RESOLUTION = 64
# 200 families x K views are enough for stable means per group (a few seconds on CPU).
DEFAULT_STATS_SAMPLES = 200


def _user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from gcl.eval.features import EncoderError
        from gcl.inputs import InputError
        from gcl.manifest import ManifestError

        errors = [EncoderError, InputError, ManifestError]
        try:
            from gcl.synth.augment import RecipeError
            from gcl.synth.generators import GeneratorLoadError

            errors += [RecipeError, GeneratorLoadError]
        except ImportError:  # pragma: no cover - generators not installed
            pass
        try:
            return fn(*args, **kwargs)
        except tuple(errors) as exc:
            raise click.ClickException(str(exc).splitlines()[0]) from None
        except (FileNotFoundError, *shard_read_errors()) as exc:
            where = getattr(exc, "filename", None) or kwargs.get("shards") or kwargs.get("manifest") or ""
            raise click.ClickException(f"cannot read {where}: {exc}") from None

    return wrapper


def shard_read_errors() -> tuple:
    from gcl.shards import ShardReadError

    return (ShardReadError,)


def _save_sheet(sheet, out: str) -> None:
    """Atomic: a half-written PNG never replaces a good one."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)


@click.command("inspect")
@click.argument("shards")
@click.option("--out", default="sheet.png", show_default=True, help="PNG contact sheet to write.")
@click.option("--rows", type=int, default=DEFAULT_ROWS, show_default=True, help="Images (rows) to show.")
@click.option("--seed", type=int, default=None, help="Random sample of rows over all shards (default: the first rows).")
@click.option("--tile", type=int, default=None, help="Image size in px [default: 4x for 32 px, native up to 256].")
@_user_errors
def inspect(shards, out, rows, seed, tile):
    """Contact sheet of SHARDS (a manifest .json, a .tar, or a folder of shards): one row per image,
    the original then its views, each captioned with its ops and strengths."""
    from gcl.eval.sheet import contact_sheet, read_families

    if rows < 1:
        raise click.UsageError("--rows must be >= 1")
    fams = read_families(shards, rows, seed)
    sheet, layout = contact_sheet(fams, tile=tile)
    _save_sheet(sheet, out)
    click.echo(f"wrote {out}: {layout.rows} rows x {layout.cols} columns (original + {layout.cols - 1} views), "
               f"{sheet.width}x{sheet.height} px")


@click.command("preview")
@click.option("--generator", "family", default="taesd", show_default=True, help="Generator family.")
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
@_user_errors
def preview(family, model, input_path, recipe, views, rows, resolution, seed, device, out, stats):
    """Run the generator with RECIPE on a handful of images and write the contact sheet (no shards):
    tune strengths here before paying for a full run."""
    from gcl.eval.viewstats import compute_view_stats, format_stats_table

    if views < 1 or rows < 1:
        raise click.UsageError("--views and --rows must be >= 1")
    fams = preview_families(family, model, input_path, recipe, views, rows, resolution, seed, device)
    from gcl.eval.sheet import contact_sheet

    sheet, layout = contact_sheet(fams)
    _save_sheet(sheet, out)
    click.echo(f"wrote {out}: {layout.rows} images x {views} views at {resolution} px ({sheet.width}x{sheet.height} px)")
    if stats:
        click.echo(format_stats_table(compute_view_stats(fams)))


def preview_families(family, model, input_path, recipe, views, rows, resolution, seed, device="cpu"):
    """Generate K views for the first `rows` readable images of `input_path`; returns Families."""
    from gcl.eval.sheet import Family
    from gcl.synth.augment import parse_recipe
    from gcl.synth.generators import load_generator
    from gcl.inputs import list_inputs, load_rgb, resize_center_crop
    from gcl.shards import sample_key
    from gcl.synth.worker import generate_views

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rec = parse_recipe(recipe)
    gen = load_generator(family, model, device)
    if resolution % gen.downsample:
        raise click.UsageError(f"--resolution {resolution} must be a multiple of the generator's downsampling ({gen.downsample})")
    inputs = list_inputs(input_path)
    images, keys, labels = [], [], []
    for item in inputs.items:
        arr, err = load_rgb(item)
        if err is not None:
            continue
        images.append(resize_center_crop(arr, resolution))
        keys.append(sample_key(item.source))
        labels.append(item.label)
        if len(images) >= rows:
            break
    if not images:
        raise click.ClickException(f"no readable images in {input_path}")
    out_views, records = generate_views(gen, images, keys, rec, views, seed)
    names = inputs.class_names
    return [Family(k, im, v, r, {"class_name": names[lab] if names and lab is not None else None}, lab)
            for k, im, v, r, lab in zip(keys, images, out_views, records, labels)]


@click.command("viewstats")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--ckpt", default=None, type=click.Path(exists=True),
              help="Encoder checkpoint (or run folder): adds the cosine similarity of its features.")
@click.option("--samples", type=int, default=DEFAULT_STATS_SAMPLES, show_default=True,
              help="Images (with all their views) sampled over the shard set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--bin-width", type=float, default=0.1, show_default=True, help="Strength bin width.")
@click.option("--no-store", is_flag=True, help="Print only; do not write 'view_stats' into the manifest.")
@_user_errors
def viewstats(manifest, ckpt, samples, seed, bin_width, no_store):
    """PSNR / SSIM (and feature cosine with --ckpt) of views against their originals, per op and
    strength; printed as a table and stored in MANIFEST under 'view_stats'."""
    from gcl.eval.sheet import read_families
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
