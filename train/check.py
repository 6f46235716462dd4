"""`python -m gcl.train.check [--flops] RECIPE.yaml [...]`: check recipes exactly as gcl-train reads them,
train nothing.

`gcl-eval study` runs this once for all arms before the first run, so that a typo in one arm stops
the study at once instead of after hours of training the arms before it (the eval app never
imports gcl.train, so the check is a subprocess with a plain-text answer). Prints one line per
recipe, `ok PATH` or `error PATH: MESSAGE`; exits 1 when any recipe fails. With --flops an accepted
recipe's line ends in ` train_flops_per_image=N`: the run's training FLOPs per training image (one
family's step, all its views forward and backward, times the epochs; BaseMethod.flops_per_family),
which the study reports as each arm's compute cost.
"""

from __future__ import annotations

import sys

from gcl.errors import UserError
from gcl.train.config import ConfigError, load_config

# Shards are given on the command line of a real run; a placeholder lets validate() pass its
# "shards or input" rule while every recipe key is checked.
PLACEHOLDER_SHARDS = ("placeholder.manifest.json",)


def check_recipe(path: str) -> str | None:
    """None when gcl-train would accept the recipe, else its one-line error."""
    try:
        cfg = load_config(path, {"shards": PLACEHOLDER_SHARDS})
    except ConfigError as exc:  # the line names the recipe already: 'error PATH: key K: ...'
        return str(exc).removeprefix(f"recipe {path}: ")
    except UserError as exc:  # the backbone check's BackboneError (timm names, stems)
        return str(exc)
    from gcl.train.methods import get_method  # lightning and lightly: only once a recipe got this far

    try:  # the method's own check of its kwargs (keys and values), as gcl-train runs it
        get_method(cfg.method).check_kwargs(cfg.method_kwargs, cfg.method)
    except ConfigError as exc:
        return f"{exc} in {path}"
    return None


def recipe_flops(path: str) -> int:
    """Training FLOPs per image over the whole run of an accepted recipe: its model built as gcl-train
    builds it (no classes: the online probe is not the method's cost), one family per epoch."""
    from gcl.train.config import family_count
    from gcl.train.methods import get_method

    cfg = load_config(path, {"shards": PLACEHOLDER_SHARDS})
    model = get_method(cfg.method)(cfg.to_dict(), 1, 0, 1)
    return model.flops_per_family(family_count(cfg)) * cfg.epochs


def main(args: list[str]) -> int:
    flops = "--flops" in args
    failed = 0
    for path in [a for a in args if a != "--flops"]:
        error = check_recipe(path)
        if error is not None:
            print(f"error {path}: {error}")
            failed += 1
        else:
            print(f"ok {path}" + (f" train_flops_per_image={recipe_flops(path)}" if flops else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
