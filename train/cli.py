"""gcl-train: self-supervised training on gcl-synth shards (or a plain npz / ImageFolder)."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from gcl.backbones import BACKBONES
from gcl.train.config import METHODS, PAIRINGS, WARMUP_MAX_FRACTION, TrainConfig, load_config

_DEFAULTS = TrainConfig()


def _value(key: str):
    """The built-in value an option shows as its default. Only options typed on the command line
    are passed on (a recipe's value wins over this default, a typed option over both)."""
    target, attr = (_DEFAULTS.optimizer, key[4:]) if key.startswith("opt_") else (_DEFAULTS, key)
    return getattr(target, attr)


def _typed(options: dict) -> dict:
    """The options the user typed; the rest None (load_config then keeps the recipe's values)."""
    ctx = click.get_current_context()
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: (v if ctx.get_parameter_source(k) in typed else None) for k, v in options.items()}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--shards", multiple=True, help="Manifest .json, folder of shards, brace pattern "
              "dir/name-{000000..000009}.tar, or tar paths (repeat the option for a list); a manifest or a set's "
              "folder may be a store URL (s3://bucket/set, gs://, hf://, https://).")
@click.option("--shards-base", help="Read the manifest's shard files from this folder, store URL (s3://, gs://, hf://, "
              "http(s)://), or pipe:COMMAND "
              "(the file name is appended) instead of the manifest's own base. Commands are taken only from here, "
              "never from a manifest.")
@click.option("--input", "input_", help="Plain npz / ImageFolder instead of shards (handcrafted views only).")
@click.option("--recipe", help="Training YAML: a path or a bundled name such as cifar10/simclr (its values replace "
              "the defaults below; options given here replace both).")
@click.option("--method", type=click.Choice(METHODS), default=_value("method"), help="Contrastive method.")
@click.option("--backbone", default=_value("backbone"), help=f"Encoder network: {', '.join(BACKBONES)}, or timm:NAME "
              "for any timm model (e.g. timm:resnet10t; its pooled features).")
@click.option("--backbone-weights", type=click.Path(dir_okay=False), show_default="none: random init",
              help="Local .safetensors file of the backbone's weights: a pretrained start (loaded strictly).")
@click.option("--cifar-stem/--no-cifar-stem", default=_value("cifar_stem"),
              help="3x3 stem without max-pool for 32-64 px inputs.")
@click.option("--epochs", type=click.IntRange(1), default=_value("epochs"),
              help=f"Passes over the training images (the LR warm-up takes at most {WARMUP_MAX_FRACTION:.0%} of them).")
@click.option("--batch-size", type=click.IntRange(2), default=_value("batch_size"), help="Families per step, per device.")
@click.option("--optimizer", "opt_name", type=click.Choice(["sgd", "lars", "adamw"]), default=_value("opt_name"),
              help="Optimizer (LARS: solo-learn's CIFAR choice).")
@click.option("--lr", "opt_lr", type=float, default=_value("opt_lr"),
              help="Learning rate at batch 256 (scaled by total batch / 256).")
@click.option("--gen-prob", type=click.FloatRange(0, 1), default=_value("gen_prob"),
              help="Probability that each chosen view is a generated one (0: handcrafted baseline).")
@click.option("--pairing", type=click.Choice(PAIRINGS), default=_value("pairing"), help="Which members make a pair.")
@click.option("--family-views", type=int, show_default="2",
              help="M >= 2 members per family for the multi-positive loss (--method supcon).")
@click.option("--members", show_default="from --pairing", help="Exact member types per family, in order: orig | gen "
              "(distinct generated views) | gen? (generated with --gen-prob, else orig); e.g. orig,orig,gen with "
              "--method supcon, and its control orig,orig,orig.")
@click.option("--eval-train", show_default="none: no online evaluation",
              help="Labelled kNN bank for online evaluation (npz / ImageFolder / labelled shards).")
@click.option("--eval-val", show_default="none", help="Labelled validation queries held out of the training data: "
              "their kNN accuracy (val_knn_top1) selects checkpoints/best.ckpt. Without it there is only last.ckpt.")
@click.option("--eval-test", show_default="none",
              help="Labelled test queries: kNN / linear accuracy logged as test_*, never used to select.")
@click.option("--eval-every", type=click.IntRange(1), default=_value("eval_every"), help="Evaluate every N epochs.")
@click.option("--eval-limit", type=click.IntRange(0), default=_value("eval_limit"),
              help="Use only the first N images of each eval set (0: all). Online evaluation runs every epoch, "
                   "hence a cap here; gcl-eval's probes run once and default to all.")
@click.option("--output", default=_value("output"), help="Run folder: run.json, metrics.csv, checkpoints/, tb/.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last.ckpt at the same step and data "
              "order, with the options stored in its run.json (an option that changes results is refused).")
@click.option("--verify/--no-verify", default=_value("verify"),
              help="Check shards against the manifest (sha256, sample counts, K, original, labels) before training "
              "(one streamed read of every local or object-store shard, once per set and machine).")
@click.option("--seed", type=int, default=_value("seed"), help="Seed of the data order, augmentations and init.")
@click.option("--num-workers", type=click.IntRange(-1), default=_value("num_workers"),
              help="Data-loader workers per device (-1: one per core, at most 8); PyTorch's DataLoader name. "
                   "Not gcl-synth's --processes.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=_value("shuffle_buffer"),
              help="Samples in each worker's shuffle buffer.")
@click.option("--devices", type=click.IntRange(1), default=_value("devices"),
              help="Devices (GPUs or CPU processes) per node, Lightning's Trainer option as it is (gcl-synth and "
                   "gcl-eval run in one process and take --device cpu|cuda|cuda:N instead).")
@click.option("--num-nodes", type=click.IntRange(1), default=_value("num_nodes"), help="Machines (DDP), Lightning's name.")
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu", "cuda", "mps"]), default=_value("accelerator"),
              help="auto: a GPU when present, else the CPU (Lightning's Trainer option; the other tools' --device).")
@click.option("--precision", default=_value("precision"),
              help="auto (fp32 on CPU, bf16/fp16 mixed on GPU), 32-true, bf16-mixed, 16-mixed.")
@click.option("--ckpt-every-steps", type=click.IntRange(0), default=_value("ckpt_every_steps"),
              help="Save last.ckpt every N steps (and every epoch).")
@click.option("--max-steps-per-epoch", type=click.IntRange(0), show_default="0: no cap",
              help="Cap an epoch (smoke runs, benchmarks).")
@click.option("--record-keys", is_flag=True, help="Write the sample keys each rank trained on to OUTPUT/keys/.")
@click.option("--set", "sets", multiple=True, metavar="KEY.SUB=VALUE",
              help="Set any recipe value, nested ones too (repeatable): --set method_kwargs.temperature=0.3, "
              "--set augmentations.0.min_scale=0.2; VALUE is read as YAML. Typed options above win over it.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar (as gcl-synth run --no-progress).")
@click.option("-v", "--verbose", is_flag=True, help="Log more: every skipped sample (as gcl-synth -v).")
def main(recipe, resume, record_keys, input_, shards, sets, no_progress, verbose, **options):
    """Train a self-supervised encoder on view families; CLI options override recipe values.

    `gcl-train --output RUN --resume` continues RUN with the options it started with.
    """
    from gcl.train import stopping

    previous = stopping.stop_on_signals()
    try:
        _run(recipe, resume, record_keys, input_, shards, sets, no_progress, verbose, options)
    finally:
        stopping.restore(previous)


def _run(recipe, resume, record_keys, input_, shards, sets, no_progress, verbose, options) -> None:
    import logging

    from gcl.errors import UserError
    from gcl.io import storage_error
    from gcl.train import stopping

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = {**_typed(options), "input": input_, "shards": shards}
        if resume:
            from gcl.train.resume import resume_config

            cfg = resume_config(options["output"], recipe, overrides, sets, log=click.echo)
        else:
            cfg = load_config(recipe, overrides, sets=sets)
        from gcl.train.run import train

        info = train(cfg, resume, record_keys, log=click.echo, progress=not no_progress)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if stopping.received() is None and storage_error(exc):
            raise click.ClickException(f"{storage_error(exc)}; the last complete checkpoint is kept, free space and "
                                       "re-run with --resume") from None
        _exit_if_stopped(options["output"])
        raise
    except BaseException:  # Lightning ends a Ctrl-C with sys.exit(1); a worker killed with us raises RuntimeError
        _exit_if_stopped(options["output"])
        raise
    if info.get("status") == "finished":
        m = info.get("final_metrics", {})
        parts = [f"{k}={m[k]:.2f}" for k in ("train_loss", "val_knn_top1", "test_knn_top1", "test_linear_top1") if k in m]
        head = "already finished, nothing to train" if info.get("already_finished") else "done"
        click.echo(f"{head}: {info['global_step']} steps, {' '.join(parts)} -> {cfg.output}")


def _exit_if_stopped(output: str) -> None:
    """After SIGINT / SIGTERM: one line and 128 + the signal number, whatever the shutdown raised."""
    from gcl.train import stopping

    signum = stopping.received()
    if signum is not None:
        click.echo(f"Error: {stopping.stopped_line(signum, output)}", err=True)
        sys.exit(128 + signum)


if __name__ == "__main__":
    main()
