"""Pairing policy: which members of a view family ({orig, view0..viewK-1}) become training views.

A policy is a member spec, one token per chosen member, in order:
  orig  the original image (may repeat: each copy gets its own handcrafted augmentation)
  gen   a generated view; all `gen` picks of a family are DISTINCT generated images
  gen?  a generated view with probability gen_prob, else the original
--members gives the spec directly (e.g. orig,orig,gen: CLSP-style extra positive; its
compute-matched control is orig,orig,orig). Without it, --pairing and --family-views M build one:
  any       gen? x M            (each view independently generated with probability gen_prob)
  orig+gen  orig, gen? x (M-1)
  gen+gen   with probability gen_prob all M are generated, else all are the original (not a
            token list: the draws are tied)
Generated picks are always distinct images: a request that could repeat one is refused by
check_family before training, and choose_members raises rather than sample with replacement.
Pure functions over a `random.Random`, so their statistics are testable without any images.
"""

from __future__ import annotations

import random

from gcl.errors import UserError
from gcl.shards import ORIG

TOKENS = ("orig", "gen", "gen?")
GEN_GEN = "gen+gen"


class PairingError(UserError):
    """The shard set cannot give what was asked (e.g. generated views from a K=0 set)."""


def member_spec(pairing: str = "any", count: int = 2, members: list[str] | None = None) -> list[str] | str:
    """The token list for a run (or GEN_GEN)."""
    if members:
        return list(members)
    if pairing == GEN_GEN:
        return GEN_GEN
    return (["orig"] if pairing == "orig+gen" else ["gen?"]) + ["gen?"] * (count - 1)


def _max_generated(spec, gen_prob: float, count: int) -> int:
    if spec == GEN_GEN:
        return count if gen_prob > 0 else 0
    return sum(t == "gen" or (t == "gen?" and gen_prob > 0) for t in spec)


def _may_use_orig(spec, gen_prob: float) -> bool:
    if spec == GEN_GEN:
        return gen_prob < 1
    return any(t == "orig" or (t == "gen?" and gen_prob < 1) for t in spec)


def check_family(num_views: int, has_orig: bool, gen_prob: float, pairing: str, count: int,
                 members: list[str] | None = None) -> None:
    """Fail before training when the shard set cannot serve the policy (no silent fallback)."""
    spec = member_spec(pairing, count, members)
    n_gen = _max_generated(spec, gen_prob, count)
    if n_gen and num_views == 0:
        raise PairingError("these shards have no generated views (K=0); use --gen-prob 0 (or --members without gen) "
                           "or shards made with --views >= 1")
    if not has_orig and _may_use_orig(spec, gen_prob):
        raise PairingError("these shards store no original image; use --gen-prob 1 and no 'orig' in --members")
    if n_gen > num_views:
        what = f"--members {','.join(spec)}" if members else f"--pairing {pairing} with {count} views"
        raise PairingError(f"{what} can choose {n_gen} generated views of a family, which has only {num_views}: "
                           f"one would repeat (more members than distinct images); use fewer gen members, "
                           f"--pairing orig+gen, or shards with --views >= {n_gen}")


def choose_members(rng: random.Random, num_views: int, gen_prob: float, pairing: str = "any",
                   count: int = 2, members: list[str] | None = None) -> list[str]:
    """Pick the members of one family for one step (see the module doc for the policies)."""
    spec = member_spec(pairing, count, members)
    if spec == GEN_GEN:
        gen = [rng.random() < gen_prob] * count
    else:
        gen = [t == "gen" or (t == "gen?" and rng.random() < gen_prob) for t in spec]
    n_gen = sum(gen)
    if n_gen > num_views:
        raise PairingError(f"{n_gen} generated members asked of a family with {num_views}: they would repeat")
    picks = iter(rng.sample([f"view{i}" for i in range(num_views)], n_gen))
    return [next(picks) if g else ORIG for g in gen]
