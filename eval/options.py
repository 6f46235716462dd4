"""Options shared by gcl-eval's commands: the encoder to score, the labelled data (named as in
gcl-train: --eval-train, --eval-test, --eval-limit) and the output folder (--output, as in every
gcl tool). Earlier spellings (--train, --test, --limit-train, --limit-test, --out) still work
but are not listed."""

from __future__ import annotations

import click

from gcl.eval.results import NO_RUN_RESULTS


def encoder_options(fn):
    opts = [
        click.option("--ckpt", type=click.Path(exists=True), help="gcl-train checkpoint (.ckpt) or run folder."),
        click.option("--backbone", default=None, help="Baseline: a backbone name (with --random-init)."),
        click.option("--random-init", is_flag=True, help="Baseline: randomly initialised --backbone (seed 0)."),
        click.option("--raw-pixels", is_flag=True, help="Baseline: standardised raw pixels as features."),
        click.option("--cifar-stem/--imagenet-stem", default=True, show_default=True,
                     help="Stem of the --random-init backbone (CIFAR: 3x3 conv, no max-pool)."),
        *eval_data_options(),
        click.option("--resolution", type=click.IntRange(8), default=None,
                     help="Resize/crop DATA to this size [default: the checkpoint's; 32 for --random-init; "
                          "as stored for --raw-pixels]."),
        click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
                     help="Feature extraction batch."),
        click.option("--device", default="auto", show_default=True,
                     help="Feature extraction device: auto (cuda if present), cpu, cuda, cuda:N (gcl-train, a Lightning "
                          "program, says --accelerator and --devices)."),
        click.option("--cache-dir", default=None,
                     help="Feature cache folder [default: RUN/features for a checkpoint, none for baselines]."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write cached features."),
        *output_options(f"Results folder [default: RUN/eval for a checkpoint, else {NO_RUN_RESULTS}]."),
        NO_PROGRESS,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


# As in gcl-synth run and gcl-train: hide what only shows the work advancing.
NO_PROGRESS = click.option("--no-progress", is_flag=True, help="Hide the feature-extraction progress lines.")


def eval_data_options():
    """The labelled data of a probe, named as in gcl-train (--eval-train, --eval-test, --eval-limit).
    The earlier spellings (--train, --test, --limit-train, --limit-test) still work, unlisted."""
    return [
        click.option("--eval-train", "train_data", default=None,
                     help="Labelled DATA for the kNN bank / linear training: npz, ImageFolder, manifest, shard folder "
                          "or .tar pattern; a shard set may be a store URL (s3://bucket/set).  [required]"),
        click.option("--eval-test", "test_data", default=None, help="Labelled DATA to score (same kinds).  [required]"),
        click.option("--eval-limit", type=click.IntRange(0), default=0, show_default=True,
                     help="Use only the first N images of each data set (0: all). gcl-train's online evaluation "
                          "defaults to 10000 because it runs every epoch; a probe here runs once, on all."),
        click.option("--train", "old_train", default=None, hidden=True),
        click.option("--test", "old_test", default=None, hidden=True),
        click.option("--limit-train", type=click.IntRange(1), default=None, hidden=True),
        click.option("--limit-test", type=click.IntRange(1), default=None, hidden=True),
    ]


def output_options(help_text: str):
    """--output (the one name of an output folder in every gcl tool); --out still works, unlisted."""
    return [click.option("--output", default=None, help=help_text), click.option("--out", "old_out", default=None, hidden=True)]


def eval_data(kw: dict) -> tuple[str, str, int | None, int | None]:
    """(train, test, limit_train, limit_test) from the options; the old spellings fill in."""
    train, test = kw.pop("train_data") or kw.pop("old_train"), kw.pop("test_data") or kw.pop("old_test")
    kw.pop("old_train", None), kw.pop("old_test", None)
    if not train or not test:
        raise click.UsageError(f"Missing option '{'--eval-train' if not train else '--eval-test'}'.")
    limit = kw.pop("eval_limit") or None
    return train, test, kw.pop("limit_train") or limit, kw.pop("limit_test") or limit


def encoder_free_data_options(fn):
    for opt in reversed([*eval_data_options(), *output_options(f"Results folder [default: {NO_RUN_RESULTS}]."),
                         NO_PROGRESS]):
        fn = opt(fn)
    return fn
