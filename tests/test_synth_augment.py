"""Latent augmenter: parsing, seeding, recorded values that regenerate a view exactly."""

import pytest
import torch

from gcl.synth.augment import OPS, augment_latents
from gcl.synth.recipe import OP_PARAMS, RecipeError, parse_recipe, view_seed
from gcl.synth.generators import load_generator


class _Cont:
    has_codebook = False


def test_parse_presets_and_specs():
    r = parse_recipe("mask(ratio=0.1..0.3, fill=noise|codes, p=0.5); noise(strength=0.2)")
    assert [o.op for o in r.ops] == ["mask", "noise"]
    assert r.ops[0].params == {"ratio": (0.1, 0.3), "fill": ("noise", "codes")} and r.ops[0].p == 0.5
    assert r.needs_codebook
    assert parse_recipe("noise").ops[0].params["strength"] == (0.25, 0.75)


def test_every_op_the_grammar_accepts_has_a_function():
    # the recipe grammar (synth/recipe.py) and the op functions (synth/augment.py) name the same ops
    assert set(OPS) == set(OP_PARAMS)
    for name, params in OP_PARAMS.items():
        values = {"fill": "noise", "steps": "4"}
        spec = f"{name}(" + ", ".join(f"{p}={values.get(p, '0.1')}" for p in sorted(params)) + ")"
        assert parse_recipe(spec).ops[0].op == name


@pytest.mark.parametrize("spec, msg", [("blur(s=1)", "unknown op"), ("noise(amount=1)", "no parameter"),
                                       ("noise", None), ("noise(strength=0.5..0.1)", "reversed"),
                                       ("mask(ratio=x)", "not a number"), ("mix()", "needs ratio")])
def test_bad_specs_are_one_line_errors(spec, msg):
    if msg is None:
        parse_recipe(spec)
        return
    with pytest.raises(RecipeError, match=msg):
        parse_recipe(spec)


def test_seed_depends_on_seed_key_and_view():
    seeds = {view_seed(s, k, v) for s in (0, 1) for k in ("a", "b") for v in (0, 1)}
    assert len(seeds) == 8 and view_seed(0, "a", 0) == view_seed(0, "a", 0)


def test_noise_strength_scales_change_and_is_recorded():
    z = torch.randn(4, 32, 8, 8) * 0.8
    keys = ["k0", "k1", "k2", "k3"]
    small, rec_s = augment_latents(_Cont(), z, keys, parse_recipe("noise(strength=0.1)"), 0, 0)
    big, _ = augment_latents(_Cont(), z, keys, parse_recipe("noise(strength=1.0)"), 0, 0)
    d_small, d_big = (small - z).std().item(), (big - z).std().item()
    assert d_small == pytest.approx(0.1 * 0.8, rel=0.15) and d_big == pytest.approx(1.0 * 0.8, rel=0.15)
    assert rec_s[0]["ops"] == [{"op": "noise", "strength": 0.1}] and rec_s[0]["seed"] == view_seed(0, "k0", 0)


def test_view_regenerates_alone_from_its_record():
    z = torch.randn(5, 32, 8, 8)
    keys = [f"img{i}" for i in range(5)]
    recipe = parse_recipe("mask(ratio=0.1..0.5, p=0.7); noise(strength=0.2..0.8)")
    batch, recs = augment_latents(_Cont(), z, keys, recipe, 3, 7)
    alone, recs_alone = augment_latents(_Cont(), z[2:3], keys[2:3], recipe, 3, 7)
    assert torch.equal(batch[2], alone[0]) and recs[2] == recs_alone[0]
    other_view, _ = augment_latents(_Cont(), z, keys, recipe, 4, 7)
    assert not torch.equal(batch, other_view)


def test_mix_records_partner_and_interpolates():
    z = torch.randn(3, 4, 2, 2)
    out, recs = augment_latents(_Cont(), z, ["a", "b", "c"], parse_recipe("mix(ratio=0.25)"), 0, 0)
    for i, rec in enumerate(recs):
        partner = "abc".index(rec["ops"][0]["partner"])
        assert partner != i
        assert torch.allclose(out[i], 0.75 * z[i] + 0.25 * z[partner])


def test_token_ops_change_the_requested_fraction(tiny_vqgan_dir):
    gen = load_generator("vqgan", str(tiny_vqgan_dir))
    with torch.inference_mode():
        z = gen.encode(torch.rand(2, 3, 32, 32))
        idx = gen.tokens(z)
        out, recs = augment_latents(gen, z, ["a", "b"], parse_recipe("vq_replace(ratio=0.5)"), 0, 0)
        changed = (gen.tokens(out) != idx).float().mean().item()
        # half the positions get a random code out of 64: ~63/64 of those differ
        assert 0.35 < changed <= 0.5
        swapped, _ = augment_latents(gen, z, ["a", "b"], parse_recipe("vq_swap(ratio=0.25, k=4)"), 0, 0)
        new = gen.tokens(swapped)
        moved = new != idx
        assert moved.float().mean().item() == pytest.approx(0.25, abs=0.02)
        book = gen.codebook()
        # every swapped code is among the 4 nearest neighbours of the code it replaced
        for old, nw in zip(idx[moved].tolist(), new[moved].tolist()):
            d = torch.cdist(book[old : old + 1], book)[0]
            d[old] = float("inf")
            assert nw in d.topk(4, largest=False).indices.tolist()
