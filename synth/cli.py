"""gcl-synth: the command line (options only; the work lives in run.py and its modules)."""

from __future__ import annotations

import logging
import os
import sys

import click
from click.core import ParameterSource

from gcl.errors import UserError
from gcl.io import storage_error
from gcl.shards import IMAGE_FORMATS

# Library noise that says nothing to a user of this command.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


# Where an option's value came from when it was typed rather than defaulted.
TYPED = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)

# Other names of a family: the docs call the taesd family by its default model, TAEF2.
GENERATOR_ALIASES = {"taef2": "taesd"}


# Options that act on the whole output, which no single node of several owns.
NODE_CONFLICTS = {"overwrite": "clear the output once before starting the nodes",
                  "manifest_copy": "pass it to `gcl-synth finalize`",
                  "reference": "compare the finalized set on one machine"}


def canonical_generator(_ctx, _param, value):
    return GENERATOR_ALIASES.get(value, value) if value else value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log every skipped input and retry.")
def main(verbose: bool) -> None:
    """Generate view families offline: encoder -> latent augmenter -> decoder -> WebDataset shards."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="YAML or JSON file of the options below that say what to make (keys with '_': views: 4, "
                   "shard_size: 500; workers for --processes); options typed here win. Where the set goes and runs "
                   "(--output, --name, --overwrite, --manifest, --scheduler, --node-rank, --num-nodes) is never "
                   "read from it.")
@click.option("--generator", default="taesd", show_default=True, callback=canonical_generator,
              help="Generator family: taesd (or its alias taef2: the TAEF2 autoencoder), vqgan, esrgan, diffusion, "
                   "maskgit, mae.")
@click.option("--model", default=None, help="Hub id or local directory (defaults: taesd TAEF2, esrgan Real-ESRGAN x4plus, from GCL_HOME, ../shared or download; vqgan amused/amused-256's VQ-GAN).")
@click.option("--pixel-range", default="auto", show_default=True, type=click.Choice(["auto", "0-1", "-1-1"]),
              help="Pixel range the VQ-GAN (vqgan, maskgit) was trained on. auto: from the model's layout "
                   "(aMUSEd's model_index.json -> 0-1; any other VQModel -> -1-1, the taming/LDM convention).")
@click.option("--input", "input_", default=None,
              help="ImageFolder, flat folder, .npz with 'images', img2dataset output, or WebDataset tars: a pattern "
                   "('part-{000000..000009}.tar'), a list, or a folder of .tar, local or a URL (s3://, gs://, hf://, "
                   "http(s)://) (default: CIFAR-10 train).")
@click.option("--label-key", default=None,
              help="WebDataset / img2dataset inputs: take each label from this field of the sample's json "
                   "(default: the cls member; none: unlabelled).")
@click.option("--output", default="out/synth", show_default=True, help="Folder for shards, stats and the manifest, or an s3:// / gs:// URL (credentials from the store's environment).")
@click.option("--name", default=None, help="Shard name prefix (default: <input>_<generator>_k<views>_r<resolution>).")
@click.option("--views", default=2, show_default=True, type=click.IntRange(0, 64), help="Generated views per image (K).")
@click.option("--resolution", default=64, show_default=True, type=click.IntRange(8, 4096), help="Synthesis size (multiple of the generator's downsampling).")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1), help="Inputs per shard.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Images per model call.")
@click.option("--processes", "workers", default=1, show_default=True, type=click.IntRange(1),
              help="Synthesis processes, each writing whole shards (a dask LocalCluster when > 1; one per GPU when "
                   "there are several). Not gcl-train's --num-workers (data-loader workers).")
@click.option("--workers", "old_workers", default=None, type=click.IntRange(1), hidden=True)  # the earlier name of --processes
@click.option("--scheduler", default=None, help="Address of an existing dask scheduler to submit shards to.")
@click.option("--recipe", default=None, help="Latent recipe: preset (noise, mask, mix, tokens, sdedit, resample, remask, esrgan) or spec like 'noise(strength=0.2..0.6); mask(ratio=0.1..0.3)' (default: the generator's preset).")
@click.option("--residual", is_flag=True, help="Residual views: x + G(view) - G(reconstruction), so a zero perturbation gives the input itself.")
@click.option("--seed", default=0, show_default=True, type=int, help="Global seed; each view is seeded from (seed, key, view).")
@click.option("--image-format", default="jpg", show_default=True, type=click.Choice(IMAGE_FORMATS),
              help="How each image is stored in the shards (png: lossless, larger).")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG/WebP quality (95: artefacts well below the generator's own error).")
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda if present), cpu, cuda, cuda:N (gcl-train, a Lightning program, says --accelerator and --devices).")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "float16", "bfloat16"]), help="auto: float16 on CUDA, float32 on CPU.")
@click.option("--overwrite", is_flag=True, help="Replace an output folder made by a different plan.")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(0), help="Retries of a failed shard.")
@click.option("--max-error-rate", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Abort when this fraction of inputs is unreadable.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Use only the first N inputs (sorted).")
@click.option("--per-class", default=None, type=click.IntRange(1), help="Only the first N images of each class (after --limit): a class-balanced subset; needs labels.")
@click.option("--manifest", "manifest_copy", default=None, help="Also record the manifest here (e.g. manifests/NAME.json) for sharing.")
@click.option("--reference", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A published manifest (e.g. manifests/NAME.json): report whether these shards match it "
                   "(same bytes on the same device kind, else pixel sketches within a tolerance); exit 1 if not.")
@click.option("--node-rank", default=0, show_default=True, type=click.IntRange(0),
              help="Several machines, one --output: this machine writes the shards whose index % --num-nodes is "
                   "this rank (e.g. $SLURM_PROCID); then `gcl-synth finalize OUTPUT` writes the manifest.")
@click.option("--num-nodes", default=1, show_default=True, type=click.IntRange(1),
              help="How many machines share the --output (e.g. $SLURM_NTASKS).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def run(config_file, input_, no_progress, old_workers, **options):
    """Synthesize view families for every input image into WebDataset shards."""
    if old_workers is not None:
        options["workers"] = old_workers
    if config_file is not None:
        input_ = _apply_config(config_file, input_, options)
    from gcl.synth.defaults import check_default_model, resolve_cifar10

    if options["node_rank"] >= options["num_nodes"]:
        raise click.UsageError(f"--node-rank {options['node_rank']} must be below --num-nodes {options['num_nodes']}")
    if options["num_nodes"] > 1:
        for flag in ("overwrite", "manifest_copy", "reference"):
            if options[flag]:
                name = "--manifest" if flag == "manifest_copy" else f"--{flag}"
                raise click.UsageError(f"{name} does not go with --num-nodes: " + NODE_CONFLICTS[flag])
    try:
        # before torch and diffusers load: an unreachable hub model fails in ~1 s, not after the imports
        check_default_model(options["generator"], options["model"])
        from gcl.synth.run import RunConfig, execute

        input_path = str(resolve_cifar10("train")) if input_ is None else input_
        result = execute(RunConfig(input=input_path, progress=not no_progress, **options))
    except UserError as exc:
        _fail(exc)
    except OSError as exc:
        if not storage_error(exc):
            raise
        raise click.ClickException(f"{storage_error(exc)}; committed shards are kept, free space or choose another "
                                   "--output and re-run the same command") from None
    if result["failed"]:
        raise click.ClickException(f"{len(result['failed'])} shard(s) failed; re-run the same command to retry them")
    if result["reference_match"] is False:
        raise click.ClickException(f"the shards do not match the reference {options['reference']} (see the report above)")


def _apply_config(path: str, input_, options: dict):
    """Fill `options` from a --config file (gcl.synthconfig's schema) where the command line typed
    nothing; returns the input. A bad file is one usage line."""
    from gcl.synthconfig import SynthConfigError, read_synth_config

    try:
        given = read_synth_config(path).given()
    except SynthConfigError as exc:
        raise click.UsageError(str(exc)) from None
    ctx = click.get_current_context()
    params = {"input": ("input_",), "workers": ("workers", "old_workers")}  # the file's key -> its flags
    for key, value in given.items():
        if any(ctx.get_parameter_source(p) in TYPED for p in params.get(key, (key,))):
            continue  # typed on the command line: it wins
        if key == "input":
            input_ = value
        else:
            options[key] = canonical_generator(ctx, None, value) if key == "generator" else value
    reference = given.get("reference")
    if reference is not None and options["reference"] == reference and not os.path.isfile(reference):
        raise click.UsageError(f"config file {path}: key 'reference': {reference} is not a file")
    return input_


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--output", required=True, help="Folder for the merged shards, their stats and manifest, or an s3:// / gs:// URL.")
@click.option("--name", required=True, help="Shard name prefix of the merged set.")
@click.option("--overwrite", is_flag=True, help="Replace a merged set of this name in --output.")
def merge(sources, output, name, overwrite):
    """Merge shard sets made from the same input (manifests or output folders: same images in the same
    order, resolution and format) into one whose families hold every set's generated views: the first
    set's K1 views, then the next set's K2, ... A training member `gen` draws among all of them."""
    from gcl.shardmerge import merge_shard_sets
    from gcl.synth.remote_output import is_url

    try:
        if is_url(output):
            path = _merge_to_url(list(sources), output, name, overwrite)
        else:
            path = merge_shard_sets(list(sources), output, name, overwrite)
    except UserError as exc:
        _fail(exc)
    except OSError as exc:
        if not storage_error(exc):
            raise
        raise click.ClickException(f"{storage_error(exc)}; free space or choose another --output") from None
    click.echo(f"manifest: {path}")


def _merge_to_url(sources: list[str], url: str, name: str, overwrite: bool) -> str:
    """merge into a staging folder that starts as the URL's records, then publish the merged set
    (the whole merged set passes through local disk, unlike gcl-synth run)."""
    from gcl.folderlock import FolderLock
    from gcl.shardmerge import merge_shard_sets
    from gcl.synth.remote_output import RemoteFolder, publish_set, pull_records, staging_folder

    remote = RemoteFolder(url)
    if any(src.rstrip("/") in (remote.url, f"{remote.url}/{name}.manifest.json") for src in sources):
        raise UserError(f"{url}: the merged set would replace a source's files; choose another --output")
    remote.check_writable()
    staging = staging_folder(remote.url, "merge")
    with FolderLock(staging, ".gcl-synth.merge.lock", "gcl-synth merge", "--output"):
        names = pull_records(remote, staging)
        merge_shard_sets(sources, staging, name, overwrite)
        return publish_set(remote, staging, name, names)


@main.command()
@click.argument("output")
@click.option("--manifest", "manifest_copy", default=None, help="Also record the manifest here (e.g. manifests/NAME.json).")
def finalize(output, manifest_copy):
    """Write the manifest of an OUTPUT that several nodes filled (gcl-synth run --node-rank R --num-nodes N),
    once every shard of the plan is committed; refuses, naming how many are missing, before that."""
    from gcl.synth.nodes import finalize as finalize_output

    try:
        path = finalize_output(output, manifest_copy)
    except UserError as exc:
        _fail(exc)
    click.echo(f"manifest: {path}")


@main.command()
@click.argument("shards")
def verify(shards):
    """Check every shard of SHARDS (a manifest .json, or an output folder holding one, on disk or at a
    store URL such as s3://bucket/prefix) against the manifest's claims (sha256, size, samples, K, labels); exit 1 naming each missing or changed shard.
    Shards without a manifest (a .tar pattern) are only read through."""
    from gcl.shardcheck import check_shard_set, mark_verified
    from gcl.shardlocations import REMOTE_SCHEMES, is_remote
    from gcl.shardset import open_shard_set

    try:
        shard_set = open_shard_set(shards, require_files=False)
        problems = check_shard_set(shard_set, remote=True)  # remote shards are streamed and checked too
    except UserError as exc:
        _fail(exc)
    if not shard_set.manifests:
        click.echo(f"note: {shards} has no manifest: only checked that every shard reads through")
    for p in problems:
        click.echo(f"BAD  {p.url}: {p.problem}")
    unchecked = [u for u in shard_set.urls if is_remote(u) and not u.startswith(REMOTE_SCHEMES)]
    checked = len(shard_set.urls) - len(unchecked)
    click.echo(f"{checked - len({p.url for p in problems})}/{checked} shards OK"
               + (f"; {len(unchecked)} not checked (not local or a store URL)" if unchecked else ""))
    if problems or unchecked:
        sys.exit(1)
    if shard_set.manifests:
        mark_verified(shard_set)  # gcl-train on this set (on this machine) need not check it again


@main.command()
@click.argument("output")
def status(output):
    """Show done / pending / failed shards of an output folder (or of the folder of its manifest), on disk
    or in an object store (s3://bucket/prefix: read only)."""
    import posixpath

    from gcl.synth.report import shard_status, status_text

    if output.endswith(".json"):
        output = (posixpath.dirname(output) if "://" in output else os.path.dirname(output)) or "."
    try:
        click.echo(status_text(shard_status(output)))
    except (FileNotFoundError, UserError) as exc:  # a missing, corrupt or crafted plan, stats or manifest
        _fail(exc)


if __name__ == "__main__":
    main()
