"""Pairing policy statistics match --gen-prob; impossible requests are errors."""

import random

import pytest

from gcl.pairing import PairingError, check_family, choose_members

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
    with pytest.raises(PairingError, match="would repeat"):
        check_family(2, True, 0.5, "any", 4)
    with pytest.raises(PairingError, match="would repeat"):  # the example: K=2, 3 generated
        check_family(2, True, 1.0, "any", 3)
    with pytest.raises(PairingError, match="would repeat"):  # K=1: two 'any' views could both be generated
        check_family(1, True, 0.5, "any", 2)
    check_family(1, True, 0.5, "orig+gen", 2)
    check_family(2, True, 0.0, "any", 5)  # handcrafted only: any number of orig copies
    with pytest.raises(PairingError, match="repeat"):  # never samples with replacement, even unchecked
        choose_members(random.Random(0), 1, 1.0, "any", 2)
    with pytest.raises(PairingError, match="gen\\+gen"):
        check_family(1, True, 0.5, "gen+gen", 2)


def test_member_specs_counts_and_types():
    rng = random.Random(2)
    for _ in range(200):
        fam = choose_members(rng, 2, 0.5, members=["orig", "orig", "gen"])
        assert fam[:2] == ["orig", "orig"] and fam[2] in ("view0", "view1")
        fam = choose_members(rng, 2, 0.5, members=["gen", "orig", "gen"])
        assert fam[1] == "orig" and {fam[0], fam[2]} == {"view0", "view1"}  # distinct generated views
        assert choose_members(rng, 0, 0.9, members=["orig", "orig", "orig"]) == ["orig"] * 3
    maybe = [choose_members(rng, 3, 0.3, members=["orig", "gen?"])[1] != "orig" for _ in range(N)]
    assert _within_binomial(sum(maybe) / N, 0.3, N)
    check_family(2, True, 0.5, "any", 3, members=["orig", "gen", "gen"])
    check_family(0, True, 0.5, "any", 3, members=["orig", "orig", "orig"])  # the control needs no K
    with pytest.raises(PairingError, match="only 2"):
        check_family(2, True, 0.5, "any", 3, members=["gen", "gen", "gen"])
    with pytest.raises(PairingError, match="K=0"):
        check_family(0, True, 0.5, "any", 2, members=["orig", "gen"])
