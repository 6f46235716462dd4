"""gcl-eval: kNN and linear probes on frozen features, baselines, and run comparison."""

from __future__ import annotations

import functools
import os

import click

from gcl.errors import UserError
from gcl.eval.options import encoder_options, encoder_free_data_options, eval_data
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


def _make_encoder(ckpt, backbone, random_init, raw_pixels, cifar_stem, resolution=None, device="cpu"):
    from gcl.eval.features import checkpoint_encoder, random_encoder, raw_pixel_encoder

    chosen = sum([bool(ckpt), bool(random_init), bool(raw_pixels)])
    if chosen != 1:
        raise click.UsageError("give exactly one of --ckpt, --random-init --backbone NAME, or --raw-pixels")
    if random_init and not backbone:
        raise click.UsageError("--random-init needs --backbone (e.g. resnet18)")
    if backbone and not random_init:
        raise click.UsageError("--backbone is only for --random-init; a checkpoint records its own backbone")
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


def _run(probe, ckpt, backbone, random_init, raw_pixels, cifar_stem, resolution, batch_size, device, cache_dir,
         no_cache, output, old_out, no_progress, baselines=False, **kw):
    from gcl.eval.baselines import baseline_line, chance_line, measure_baselines
    from gcl.eval.probe import run_probe
    from gcl.eval.results import results_dir, save_result

    train_data, test_data, limit_train, limit_test = eval_data(kw)
    device = _device(device)
    encoder = _make_encoder(ckpt, backbone, random_init, raw_pixels, cifar_stem, resolution, device)
    log = functools.partial(click.echo, err=True)
    folder = results_dir(encoder.describe if ckpt else None, output or old_out)
    cache = _cache_dir(ckpt, cache_dir, no_cache)
    record = run_probe(probe, encoder, train_data, test_data, limit_train=limit_train, limit_test=limit_test,
                       cache_dir=cache, batch_size=batch_size, log=log, progress=not no_progress, **kw)
    if baselines and not (random_init or raw_pixels):
        record["baselines"] = measure_baselines(encoder, train_data, test_data, limit_train, limit_test, cache,
                                                batch_size, device, log, **kw)
    json_path, table = save_result(record, folder)
    click.echo(f"{probe} {encoder.describe}: top-1 {record['top1']:.2f}%  top-5 {record['top5']:.2f}%  "
               f"({record['n_train']} train / {record['n_test']} test images)")
    click.echo(chance_line(record))
    if record.get("baselines"):
        click.echo(baseline_line(record))
    click.echo(f"wrote {json_path} and a row in {table}", err=True)
    return record


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log more: every skipped input (as gcl-synth -v and gcl-train -v).")
def main(verbose: bool):
    """Evaluate gcl-train checkpoints with frozen-feature probes, and compare runs."""
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@main.command()
@encoder_options
@click.option("--k", type=int, default=DEFAULT_K, show_default=True, help="Neighbours (solo-learn/lightly: 20).")
@click.option("--temperature", type=float, default=DEFAULT_TEMPERATURE, show_default=True,
              help="Vote weight exp(cos/T) (solo-learn/lightly: 0.07).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also score raw pixels and a random-init encoder of the same backbone on the same images "
                   "(the floors a trained encoder must beat; the random-init features are cached like the run's).")
@_user_errors
def knn(k, temperature, baselines, **kw):
    """Weighted cosine kNN on frozen features; prints top-1 and top-5, the chance level and the baselines."""
    if k < 1 or temperature <= 0:
        raise click.UsageError("--k must be >= 1 and --temperature > 0")
    _run("knn", k=k, temperature=temperature, baselines=baselines, **kw)


@main.command()
@encoder_options
@click.option("--recipe", "old_recipe", type=click.Path(exists=True, dir_okay=False), default=None, hidden=True)
@click.option("--linear-recipe", "recipe", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Linear-probe YAML: a 'linear:' section of LinearRecipe keys, or a solo-learn linear yaml "
                   "(optimizer/scheduler/max_epochs)  [default: 100 epochs, lr 0.1, step schedule].")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs (default 100).")
@click.option("--lr", type=float, default=None, help="Override the recipe's lr (default 0.1).")
@click.option("--schedule", type=click.Choice(["step", "cosine"]), default=None, help="Override the lr schedule.")
@click.option("--standardize/--no-standardize", default=None, help="z-score features before the linear layer.")
@_user_errors
def linear(recipe, old_recipe, epochs, lr, schedule, standardize, **kw):
    """Linear classifier on frozen features (solo-learn protocol); prints top-1 and top-5."""
    from gcl.eval.linear import load_recipe

    try:
        rec = load_recipe(recipe or old_recipe, epochs=epochs, lr=lr, schedule=schedule, standardize=standardize)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    _run("linear", recipe=rec, **kw)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", default=None, help="Folder for compare.png and compare.md [default: the first RUN].")
@click.option("--plot", default=None, hidden=True)
@click.option("--markdown", default=None, hidden=True)
@_user_errors
def compare(runs, output, plot, markdown):
    """One table of runs (method, shards, gen-prob, epochs, kNN, linear), each number with its protocol and
    data size, and a plot of accuracy over epochs; written as compare.md and compare.png."""
    from pathlib import Path

    from gcl.eval.compare import align_protocols, disambiguate, format_table, plot_runs, summarize_run
    from gcl.io import write_bytes_atomic

    rows = disambiguate(align_protocols([summarize_run(r) for r in runs]))
    table = format_table(rows)
    click.echo(table)
    folder = Path(output or runs[0])
    markdown, plot = markdown or folder / "compare.md", plot or folder / "compare.png"
    Path(markdown).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(Path(markdown), (table + "\n").encode())
    n = plot_runs(rows, str(plot))
    curves = f"{n} curves" if n else "no per-epoch accuracy in the runs' logs"
    click.echo(f"wrote {markdown} and {plot} ({curves})", err=True)


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--output", required=True,
              help="Folder for model.safetensors (the backbone, torchvision / timm keys) and config.json.")
@click.option("--checkpoint", "which", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="Which checkpoint of a run folder (best: chosen on held-out validation queries).")
@_user_errors
def export(run, output, which):
    """Write RUN's backbone as OUTPUT/model.safetensors + config.json, loadable by torchvision or timm
    without gcl (docs/python-api.md shows the lines that rebuild it)."""
    from gcl.eval.export import export_run

    cfg = export_run(run, output, which)
    click.echo(f"wrote {output}/model.safetensors ({cfg['library']} {cfg['model_name']}, {cfg['feature_dim']}-d "
               f"features) and {output}/config.json")


@main.command()
@encoder_free_data_options
@click.option("--backbone", default="resnet18", show_default=True, help="Backbone of the random-init baseline.")
@click.option("--cifar-stem/--imagenet-stem", default=True, show_default=True,
              help="Stem of the random-init backbone (CIFAR: 3x3 conv, no max-pool).")
@click.option("--resolution", type=click.IntRange(8), default=32, show_default=True,
              help="Resize/crop DATA to this size for the random-init backbone.")
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda if present), cpu, cuda, cuda:N (gcl-train, a Lightning program, says --accelerator and --devices).")
@_user_errors
def baselines(backbone, cifar_stem, resolution, device, output, old_out, no_progress, **kw):
    """kNN floors: a random-init backbone and raw pixels (every trained number must beat these)."""
    from gcl.eval.features import random_encoder, raw_pixel_encoder
    from gcl.eval.probe import run_probe
    from gcl.eval.results import results_dir, save_result

    train_data, test_data, limit_train, limit_test = eval_data(kw)
    log = functools.partial(click.echo, err=True)
    folder = results_dir(None, output or old_out)
    for enc in (random_encoder(backbone, cifar_stem, resolution=resolution, device=_device(device)),
                raw_pixel_encoder()):
        rec = run_probe("knn", enc, train_data, test_data, limit_train=limit_train, limit_test=limit_test, log=log,
                        progress=not no_progress)
        save_result(rec, folder)
        click.echo(f"knn {enc.describe}: top-1 {rec['top1']:.2f}%  top-5 {rec['top5']:.2f}%  "
                   f"({rec['n_train']} train / {rec['n_test']} test images)")
    click.echo(f"wrote results to {folder}", err=True)


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
    from gcl.eval.study.runner import run_study
    from gcl.eval.study.config import load_study
    from gcl.eval.study.report import write_report
    from gcl.eval.study.runs import measure_train_flops

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
