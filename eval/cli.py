"""gcl-eval: kNN and linear probes on frozen features, baselines, and run comparison."""

from __future__ import annotations

import functools
import os

import click

from gcl.errors import UserError
from gcl.knn import DEFAULT_K, DEFAULT_TEMPERATURE


def _user_errors(fn):
    """Every user-fixable error (gcl.errors.UserError) becomes one line, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, FloatingPointError) as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except FileNotFoundError as exc:
            raise click.ClickException(f"file not found: {exc.filename}") from None

    return wrapper


def _encoder_options(fn):
    opts = [
        click.option("--ckpt", type=click.Path(exists=True), help="gcl-train checkpoint (.ckpt) or run folder."),
        click.option("--backbone", default=None, help="Baseline: a backbone name (with --random-init)."),
        click.option("--random-init", is_flag=True, help="Baseline: randomly initialised --backbone (seed 0)."),
        click.option("--raw-pixels", is_flag=True, help="Baseline: standardised raw pixels as features."),
        click.option("--cifar-stem/--imagenet-stem", default=True, show_default=True,
                     help="Stem of the --random-init backbone (CIFAR: 3x3 conv, no max-pool)."),
        click.option("--train", "train_data", required=True, help="Labelled DATA: npz, ImageFolder, manifest or .tar."),
        click.option("--test", "test_data", required=True, help="Labelled DATA to score."),
        click.option("--resolution", type=int, default=None,
                     help="Resize/crop DATA to this size [default: the checkpoint's; 32 for --random-init; "
                          "as stored for --raw-pixels]."),
        click.option("--limit-train", type=int, default=None, help="Use only the first N train images."),
        click.option("--limit-test", type=int, default=None, help="Use only the first N test images."),
        click.option("--batch-size", type=int, default=256, show_default=True, help="Feature extraction batch."),
        click.option("--device", default="cpu", show_default=True, help="Feature extraction device (cpu, cuda, cuda:N)."),
        click.option("--cache-dir", default=None,
                     help="Feature cache folder [default: RUN/features for a checkpoint, none for baselines]."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write cached features."),
        click.option("--out", default=None, help="Results folder [default: RUN/eval, or ./eval-results]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _make_encoder(ckpt, backbone, random_init, raw_pixels, cifar_stem, resolution=None, device="cpu"):
    from gcl.eval.features import checkpoint_encoder, random_encoder, raw_pixel_encoder

    chosen = sum([bool(ckpt), bool(random_init), bool(raw_pixels)])
    if chosen != 1:
        raise click.UsageError("give exactly one of --ckpt, --random-init --backbone NAME, or --raw-pixels")
    if random_init and not backbone:
        raise click.UsageError("--random-init needs --backbone (e.g. resnet18)")
    if backbone and not random_init:
        raise click.UsageError("--backbone is only for --random-init; a checkpoint records its own backbone")
    if resolution is not None and resolution < 8:
        raise click.UsageError("--resolution must be >= 8")
    if ckpt:
        enc = checkpoint_encoder(ckpt, device)
        enc.resolution = resolution or enc.resolution  # preprocess() resizes to the trained size anyway
        return enc
    if random_init:
        return random_encoder(backbone, cifar_stem=cifar_stem, resolution=resolution, device=device)
    return raw_pixel_encoder(resolution)


def _cache_dir(ckpt, cache_dir, no_cache):
    if no_cache:
        return None
    if cache_dir:
        return cache_dir
    if ckpt:
        from gcl.eval.features import resolve_checkpoint
        from gcl.eval.results import results_dir

        return str(results_dir(str(resolve_checkpoint(ckpt)), None).parent / "features")
    return None


def _run(probe, ckpt, backbone, random_init, raw_pixels, cifar_stem, train_data, test_data, resolution, limit_train,
         limit_test, batch_size, device, cache_dir, no_cache, out, **probe_kwargs):
    from gcl.eval.probe import run_probe
    from gcl.eval.results import results_dir, save_result

    encoder = _make_encoder(ckpt, backbone, random_init, raw_pixels, cifar_stem, resolution, device)
    log = functools.partial(click.echo, err=True)
    record = run_probe(probe, encoder, train_data, test_data, limit_train=limit_train, limit_test=limit_test,
                       cache_dir=_cache_dir(ckpt, cache_dir, no_cache), batch_size=batch_size, log=log, **probe_kwargs)
    json_path, table = save_result(record, results_dir(encoder.describe if ckpt else None, out))
    click.echo(f"{probe} {encoder.describe}: top-1 {record['top1']:.2f}%  top-5 {record['top5']:.2f}%  "
               f"(n_test {record['n_test']}, chance {record['chance_top1']:.1f}%)")
    click.echo(f"wrote {json_path} and a row in {table}", err=True)
    return record


@click.group()
def main():
    """Evaluate gcl-train checkpoints with frozen-feature probes, and compare runs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@main.command()
@_encoder_options
@click.option("--k", type=int, default=DEFAULT_K, show_default=True, help="Neighbours (solo-learn/lightly: 20).")
@click.option("--temperature", type=float, default=DEFAULT_TEMPERATURE, show_default=True,
              help="Vote weight exp(cos/T) (solo-learn/lightly: 0.07).")
@_user_errors
def knn(k, temperature, **kw):
    """Weighted cosine kNN on frozen features; prints top-1 and top-5."""
    if k < 1 or temperature <= 0:
        raise click.UsageError("--k must be >= 1 and --temperature > 0")
    _run("knn", k=k, temperature=temperature, **kw)


@main.command()
@_encoder_options
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML: a 'linear:' section of LinearRecipe keys, or a solo-learn linear yaml (optimizer/scheduler/max_epochs).")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs (default 100).")
@click.option("--lr", type=float, default=None, help="Override the recipe's lr (default 0.1).")
@click.option("--schedule", type=click.Choice(["step", "cosine"]), default=None, help="Override the lr schedule.")
@click.option("--standardize/--no-standardize", default=None, help="z-score features before the linear layer.")
@_user_errors
def linear(recipe, epochs, lr, schedule, standardize, **kw):
    """Linear classifier on frozen features (solo-learn protocol); prints top-1 and top-5."""
    from gcl.eval.linear import load_recipe

    try:
        rec = load_recipe(recipe, epochs=epochs, lr=lr, schedule=schedule, standardize=standardize)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    _run("linear", recipe=rec, **kw)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--plot", default="compare.png", show_default=True, help="PNG of accuracy over epochs.")
@click.option("--markdown", default=None, help="Also write the table to this .md file.")
@_user_errors
def compare(runs, plot, markdown):
    """One table of runs (method, shards, gen-prob, epochs, kNN, linear) and a plot over epochs."""
    from gcl.eval.compare import disambiguate, format_table, plot_runs, summarize_run

    rows = disambiguate([summarize_run(r) for r in runs])
    table = format_table(rows)
    click.echo(table)
    if markdown:
        with open(markdown, "w") as fh:
            fh.write(table + "\n")
    n = plot_runs(rows, plot)
    click.echo(f"plot: {plot} ({n} curves)" if n else f"plot: {plot} (no per-epoch accuracy in the runs' logs)", err=True)


@main.command()
@click.option("--train", "train_data", required=True, help="Labelled DATA used as the kNN memory bank.")
@click.option("--test", "test_data", required=True, help="Labelled DATA to score.")
@click.option("--backbone", default="resnet18", show_default=True)
@click.option("--limit-train", type=int, default=None)
@click.option("--limit-test", type=int, default=None)
@click.option("--out", default="eval-results", show_default=True)
@_user_errors
def baselines(train_data, test_data, backbone, limit_train, limit_test, out):
    """kNN floors: a random-init backbone and raw pixels (every trained number must beat these)."""
    from gcl.eval.features import random_encoder, raw_pixel_encoder
    from gcl.eval.probe import run_probe
    from gcl.eval.results import save_result

    log = functools.partial(click.echo, err=True)
    for enc in (random_encoder(backbone), raw_pixel_encoder()):
        rec = run_probe("knn", enc, train_data, test_data, limit_train=limit_train, limit_test=limit_test, log=log)
        save_result(rec, out)
        click.echo(f"knn {enc.describe}: top-1 {rec['top1']:.2f}%  top-5 {rec['top5']:.2f}%")


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--report-only", is_flag=True, help="Rebuild results.md and results.png from the result JSONs; run nothing.")
@click.option("--only", default=None, help="Comma-separated arms to run (default: all).")
@click.option("--seeds", default=None, help="Comma-separated seeds to run, from the study's seeds (default: all).")
@click.option("--dry-run", is_flag=True, help="Print what would run (and check every arm's recipe); run nothing.")
@click.option("--max-runs", type=click.IntRange(1), default=None, help="Stop after N runs (the rest wait for the next call).")
@click.option("--rerun-stale", is_flag=True, help="Delete results and run folders of arms changed since they ran, and re-run them.")
@click.option("--scheduler", default=None,
              help="Address of a dask scheduler to make the shard sets on (a study file cannot choose one).")
@_user_errors
def study(study_file, report_only, only, seeds, dry_run, max_runs, rerun_stale, scheduler):
    """Run the arms x seeds of STUDY_FILE that are missing, then write its table and plot.

    Finished runs are skipped and killed ones resumed, so a study spans several sittings.
    """
    from gcl.eval.study import run_study
    from gcl.eval.study_config import load_study
    from gcl.eval.study_report import write_report
    from gcl.eval.study_runs import measure_train_flops

    log = functools.partial(click.echo, err=True)
    try:
        spec = load_study(study_file)
        if report_only:
            if write_report(spec, log, measure_train_flops(spec)) is None:
                raise click.ClickException(f"no results in {spec.folder / 'runs'} yet")
            return
        failed = run_study(spec, only=only, seeds=seeds, dry_run=dry_run, max_runs=max_runs,
                           rerun_stale=rerun_stale, log=log, scheduler=scheduler)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    if failed:
        raise click.ClickException(f"{failed} run(s) failed; their records are in {spec.folder / 'runs'}/*.failed.json")


def _register_picture_commands() -> None:
    """inspect / preview / viewstats (eval/pictures.py) judge views: they are eval's tools."""
    from gcl.eval import pictures

    for cmd in (pictures.inspect, pictures.preview, pictures.viewstats):
        main.add_command(_with_user_errors(cmd), cmd.name)


def _with_user_errors(cmd: click.Command) -> click.Command:
    cmd.callback = _user_errors(cmd.callback)
    return cmd


_register_picture_commands()

if __name__ == "__main__":
    main()
