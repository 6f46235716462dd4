"""gcl-synth: the command line (options only; the work lives in run.py and its modules)."""

from __future__ import annotations

import logging
import os
import sys

import click

from gcl.shards import IMAGE_FORMATS

# Library noise that says nothing to a user of this command.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log every skipped input and retry.")
def main(verbose: bool) -> None:
    """Generate view families offline: encoder -> latent augmenter -> decoder -> WebDataset shards."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--generator", default="taesd", show_default=True, help="Generator family: taesd, vqgan, esrgan, diffusion, maskgit, mae.")
@click.option("--model", default=None, help="Hub id or local directory (defaults: taesd TAEF2, esrgan Real-ESRGAN x4plus, from GCL_HOME, ../shared or download; vqgan amused/amused-256's VQ-GAN).")
@click.option("--input", "input_", default=None, help="ImageFolder, flat folder, or .npz with 'images' (default: CIFAR-10 train).")
@click.option("--output", default="out/synth", show_default=True, help="Folder for shards, stats and the manifest.")
@click.option("--name", default=None, help="Shard name prefix (default: <input>_<generator>_k<views>_r<resolution>).")
@click.option("--views", default=2, show_default=True, type=click.IntRange(0, 64), help="Generated views per image (K).")
@click.option("--resolution", default=64, show_default=True, type=click.IntRange(8, 4096), help="Synthesis size (multiple of the generator's downsampling).")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1), help="Inputs per shard.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Images per model call.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Parallel shard workers (dask LocalCluster processes when > 1).")
@click.option("--scheduler", default=None, help="Address of an existing dask scheduler to submit shards to.")
@click.option("--recipe", default=None, help="Latent recipe: preset (noise, mask, mix, tokens, sdedit, resample, remask, esrgan) or spec like 'noise(strength=0.2..0.6); mask(ratio=0.1..0.3)' (default: the generator's preset).")
@click.option("--residual", is_flag=True, help="Residual views: x + G(view) - G(reconstruction), so a zero perturbation gives the input itself.")
@click.option("--seed", default=0, show_default=True, type=int, help="Global seed; each view is seeded from (seed, key, view).")
@click.option("--image-format", default="jpg", show_default=True, type=click.Choice(IMAGE_FORMATS))
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG/WebP quality (95: artefacts well below the generator's own error).")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if present), cpu, cuda, cuda:N.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "float16", "bfloat16"]), help="auto: float16 on CUDA, float32 on CPU.")
@click.option("--overwrite", is_flag=True, help="Replace an output folder made by a different plan.")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(0), help="Retries of a failed shard.")
@click.option("--max-error-rate", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Abort when this fraction of inputs is unreadable.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Use only the first N inputs (sorted).")
@click.option("--manifest", "manifest_copy", default=None, help="Also record the manifest here (e.g. manifests/NAME.json) for sharing.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def run(generator, model, input_, output, name, views, resolution, shard_size, batch_size, workers, scheduler,
        recipe, residual, seed, image_format, quality, device, dtype, overwrite, retries, max_error_rate, limit,
        manifest_copy, no_progress):
    """Synthesize view families for every input image into WebDataset shards."""
    from gcl.synth.defaults import DownloadError, check_default_model, resolve_cifar10

    try:  # before torch and diffusers load: an unreachable hub model fails in ~1 s, not after the imports
        check_default_model(generator, model)
    except DownloadError as exc:
        _fail(exc)
    from gcl.synth.augment import RecipeError
    from gcl.synth.generators import GeneratorLoadError
    from gcl.inputs import InputError
    from gcl.synth.plan import PlanMismatch
    from gcl.synth.run import RunAborted, RunConfig, execute

    try:
        input_path = str(resolve_cifar10("train")) if input_ is None else input_
        cfg = RunConfig(generator, model, input_path, output, name, views, resolution, shard_size, batch_size,
                        workers, scheduler, recipe, seed, image_format, quality, device, dtype, overwrite, retries,
                        max_error_rate, limit, manifest_copy, not no_progress, residual=residual)
        result = execute(cfg)
    except (RecipeError, GeneratorLoadError, InputError, PlanMismatch, RunAborted, DownloadError, ValueError) as exc:
        _fail(exc)
    if result["failed"]:
        raise click.ClickException(f"{len(result['failed'])} shard(s) failed; re-run the same command to retry them")


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
def verify(manifest):
    """Re-hash every shard of MANIFEST; exit 1 naming each missing or changed shard."""
    from gcl.manifest import ManifestError, verify_manifest

    try:
        checked, problems = verify_manifest(manifest)
    except ManifestError as exc:
        _fail(exc)
    for p in problems:
        click.echo(f"BAD  {p.url}: {p.problem}")
    click.echo(f"{checked - len(problems)}/{checked} shards OK")
    if problems:
        sys.exit(1)


@main.command()
@click.argument("output", type=click.Path(file_okay=False))
def status(output):
    """Show done / pending / failed shards of an output folder."""
    from gcl.synth.report import shard_status, status_text

    try:
        click.echo(status_text(shard_status(output)))
    except FileNotFoundError as exc:
        _fail(exc)


def _register_optional_commands() -> None:
    """inspect / preview / viewstats live in synth/inspect.py (gcl-eval's picture tools)."""
    try:
        from gcl.synth import inspect as inspect_cmds
    except ImportError:
        return
    for cmd_name in ("inspect", "preview", "viewstats"):
        cmd = getattr(inspect_cmds, cmd_name, None)
        if isinstance(cmd, click.Command):
            main.add_command(cmd, cmd_name)


_register_optional_commands()

if __name__ == "__main__":
    main()
