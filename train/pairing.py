"""Pairing policy: which members of a view family ({orig, view0..viewK-1}) become training views.

Pure functions over a `random.Random`, so their statistics are testable without any images.
"""

from __future__ import annotations

import random

from gcl.errors import UserError
from gcl.shards import ORIG


class PairingError(UserError):
    """The shard set cannot give what was asked (e.g. generated views from a K=0 set)."""


def check_family(num_views: int, has_orig: bool, gen_prob: float, pairing: str, count: int) -> None:
    """Fail before training when the shard set cannot serve the policy (no silent fallback)."""
    if gen_prob > 0 and num_views == 0:
        raise PairingError("these shards have no generated views (K=0); use --gen-prob 0 or shards made with --views >= 1")
    if not has_orig and gen_prob < 1:
        raise PairingError("these shards store no original image; use --gen-prob 1")
    if pairing == "gen+gen" and gen_prob > 0 and num_views < 2:
        raise PairingError(f"--pairing gen+gen needs >= 2 generated views per family, the shards have {num_views}")
    if count > 2 and count > num_views + 1:
        raise PairingError(f"--family-views {count} asks for more members than a family has ({num_views + 1})")


def choose_members(rng: random.Random, num_views: int, gen_prob: float, pairing: str = "any",
                   count: int = 2) -> list[str]:
    """Pick `count` members of one family.

    any:      each chosen view is generated with probability gen_prob, else the original.
    orig+gen: the first view is always the original; the others as in 'any'.
    gen+gen:  with probability gen_prob all views are generated, else all are the original
              (the per-view marginal is still gen_prob).
    Generated picks are distinct views while the family has enough of them; with one view the
    same generated image is used twice (the handcrafted augmenter still makes them differ).
    Families (count > 2) follow the same rule; check_family() has made sure the family holds at
    least `count` members, so generated picks there are always distinct images.
    """
    if pairing == "gen+gen":
        gen = [rng.random() < gen_prob] * count
    else:
        gen = [rng.random() < gen_prob for _ in range(count)]
        if pairing == "orig+gen":
            gen[0] = False
    n_gen = sum(gen)
    if n_gen == 0:
        return [ORIG] * count
    pool = [f"view{i}" for i in range(num_views)]
    if n_gen <= len(pool):
        picks = rng.sample(pool, n_gen)
    else:
        picks = [rng.choice(pool) for _ in range(n_gen)]
    it = iter(picks)
    return [next(it) if g else ORIG for g in gen]
