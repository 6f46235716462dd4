"""Pairing policy statistics match --gen-prob; impossible requests are errors."""

import random

import pytest

from gcl.train.pairing import PairingError, check_family, choose_members

N = 2000


def _gen_fraction(p, pairing, views=3, count=2, seed=0):
    rng = random.Random(seed)
    picks = [choose_members(rng, views, p, pairing, count) for _ in range(N)]
    flat = [m for pick in picks for m in pick]
    return sum(m != "orig" for m in flat) / len(flat), picks


def _within_binomial(frac, p, n, z=4.0):
    sd = (p * (1 - p) / n) ** 0.5
    return abs(frac - p) <= z * sd + 1e-12


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_any_pairing_matches_gen_prob(p):
    frac, picks = _gen_fraction(p, "any")
    # views are independent in 'any': test per-view marginal on the first chosen view
    first = sum(pk[0] != "orig" for pk in picks) / N
    assert _within_binomial(first, p, N)
    assert _within_binomial(frac, p, 2 * N, z=5.0)


def test_orig_gen_and_gen_gen():
    _, picks = _gen_fraction(0.5, "orig+gen")
    assert all(pk[0] == "orig" for pk in picks)
    assert _within_binomial(sum(pk[1] != "orig" for pk in picks) / N, 0.5, N)
    frac, picks = _gen_fraction(0.5, "gen+gen")
    assert all((pk[0] == "orig") == (pk[1] == "orig") for pk in picks)
    gen_pairs = [pk for pk in picks if pk[0] != "orig"]
    assert all(pk[0] != pk[1] for pk in gen_pairs)  # distinct generated views when K >= 2
    assert _within_binomial(len(gen_pairs) / N, 0.5, N)


def test_generated_views_are_uniform():
    _, picks = _gen_fraction(1.0, "any", views=4)
    counts = {}
    for pk in picks:
        for m in pk:
            counts[m] = counts.get(m, 0) + 1
    assert set(counts) == {"view0", "view1", "view2", "view3"}
    for c in counts.values():
        assert _within_binomial(c / (2 * N), 0.25, 2 * N, z=5.0)


def test_family_members_distinct_and_errors():
    rng = random.Random(1)
    for _ in range(50):
        fam = choose_members(rng, 3, 1.0, "any", 3)
        assert sorted(fam) == ["view0", "view1", "view2"]  # 3 generated picks from K=3: all distinct
    with pytest.raises(PairingError, match="K=0"):
        check_family(0, True, 0.5, "any", 2)
    check_family(0, True, 0.0, "any", 2)  # handcrafted baseline on K=0 shards is fine
    with pytest.raises(PairingError, match="more members"):
        check_family(2, True, 0.5, "any", 4)
    with pytest.raises(PairingError, match="gen\\+gen"):
        check_family(1, True, 0.5, "gen+gen", 2)
