"""gcl-train: self-supervised training on gcl-synth shards (or a plain npz / ImageFolder)."""

from __future__ import annotations

import click

from gcl.backbones import BACKBONES
from gcl.train.config import METHODS, PAIRINGS, load_config


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shards", multiple=True, help="Manifest .json, brace pattern dir/name-{000000..000009}.tar, or tar paths "
              "(repeat the option for a list).")
@click.option("--shards-base", help="Read the manifest's shard files from this folder, http(s) URL, or pipe:COMMAND "
              "(the file name is appended) instead of the manifest's own base. Commands are taken only from here, "
              "never from a manifest.")
@click.option("--input", "input_", help="Plain npz / ImageFolder instead of shards (handcrafted views only).")
@click.option("--recipe", help="YAML recipe: a path or a bundled name such as cifar10/simclr.")
@click.option("--method", type=click.Choice(METHODS))
@click.option("--backbone", type=click.Choice(BACKBONES))
@click.option("--cifar-stem/--no-cifar-stem", default=None, help="3x3 stem without max-pool for 32-64 px inputs.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="Per device.")
@click.option("--optimizer", "opt_name", type=click.Choice(["sgd", "lars", "adamw"]))
@click.option("--lr", "opt_lr", type=float, help="Learning rate at batch 256 (scaled by total batch / 256).")
@click.option("--gen-prob", type=float, help="Probability that each chosen view is a generated one (0: handcrafted baseline).")
@click.option("--pairing", type=click.Choice(PAIRINGS), help="Which members make a pair.")
@click.option("--family-views", type=int, help="M >= 2 members per family for the multi-positive loss (--method supcon).")
@click.option("--members", help="Exact member types per family, in order: orig | gen (distinct generated views) | "
              "gen? (generated with --gen-prob, else orig); e.g. orig,orig,gen with --method supcon, and its "
              "control orig,orig,orig.")
@click.option("--eval-train", help="Labelled kNN bank for online evaluation (npz / ImageFolder / labelled shards).")
@click.option("--eval-val", help="Labelled validation queries held out of the training data: their kNN accuracy "
              "(val_knn_top1) selects checkpoints/best.ckpt. Without it there is only last.ckpt.")
@click.option("--eval-test", help="Labelled test queries: kNN / linear accuracy logged as test_*, never used to select.")
@click.option("--eval-every", type=int, help="Evaluate every N epochs.")
@click.option("--eval-limit", type=int, help="At most this many images per eval set (0: all).")
@click.option("--output", help="Run folder: metrics.csv, run.json, checkpoints/, tb/.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoints/last.ckpt at the same step and data order.")
@click.option("--verify/--no-verify", default=None, help="Check shards against the manifest (sha256, sample counts, K, "
              "original, labels) before training [default: on; one read of every local shard].")
@click.option("--seed", type=int)
@click.option("--num-workers", type=int, help="Loader workers per device (-1: one per core, at most 8).")
@click.option("--shuffle-buffer", type=int, help="Samples in each worker's shuffle buffer.")
@click.option("--devices", type=int)
@click.option("--num-nodes", type=int)
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu", "cuda", "mps"]))
@click.option("--precision", help="auto (fp32 on CPU, bf16/fp16 mixed on GPU), 32-true, bf16-mixed, 16-mixed.")
@click.option("--ckpt-every-steps", type=int, help="Save last.ckpt every N steps (and every epoch).")
@click.option("--max-steps-per-epoch", type=int, help="Cap an epoch (smoke runs, benchmarks).")
@click.option("--record-keys", is_flag=True, help="Write the sample keys each rank trained on to OUTPUT/keys/.")
def main(recipe, resume, record_keys, input_, shards, **options):
    """Train a self-supervised encoder on view families; CLI options override recipe values."""
    from gcl.errors import UserError
    from gcl.io import storage_error

    try:
        cfg = load_config(recipe, {**options, "input": input_, "shards": shards})
        from gcl.train.run import train

        info = train(cfg, resume, record_keys)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if not storage_error(exc):
            raise
        raise click.ClickException(f"{storage_error(exc)}; the last complete checkpoint is kept, free space and "
                                   "re-run with --resume") from None
    if info.get("status") == "finished":
        m = info.get("final_metrics", {})
        parts = [f"{k}={m[k]:.2f}" for k in ("train_loss", "val_knn_top1", "test_knn_top1", "test_linear_top1") if k in m]
        click.echo(f"done: {info['global_step']} steps, {' '.join(parts)} -> {cfg.output}")


if __name__ == "__main__":
    main()
