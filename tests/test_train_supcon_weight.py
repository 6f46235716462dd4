"""The down-weighted generated positive of the SupCon family loss (method_kwargs gen_positive_weight)."""

import math
import os
import socket
import sys
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.config import AugConfig, ConfigError, TrainConfig  # noqa: E402
from gcl.train.methods.supcon import SupCon, generated_flags, supcon_loss  # noqa: E402


def loop_loss(z, family, temperature, weight_of):
    """SupCon written out anchor by anchor: -sum_j w_j log p_ij / sum_j w_j over positives j, where
    p_ij = exp(s_ij) / sum_{k != i} exp(s_ik); weight_of(j) -> w_j. An anchor with sum w = 0 adds 0."""
    n = len(z)
    total = 0.0
    for i in range(n):
        sims = [float(z[i] @ z[k]) / temperature for k in range(n)]
        log_den = math.log(sum(math.exp(sims[k]) for k in range(n) if k != i))
        num = den = 0.0
        for j in range(n):
            if j != i and family[j] == family[i]:
                num += weight_of(j) * (sims[j] - log_den)
                den += weight_of(j)
        total += -num / den if den > 0 else 0.0
    return total / n


def _batch(seed=0, b=6, m=4, d=8):
    """A view-major batch of b families with members [orig, orig, gen, gen?]: member 3 is generated
    for some samples only, and every anchor keeps an original positive."""
    gen = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(m * b, d, generator=gen, dtype=torch.float64), dim=1)
    family = torch.arange(b).repeat(m)
    per_sample = torch.zeros(b, m, dtype=torch.bool)
    per_sample[:, 2] = True
    per_sample[::2, 3] = True
    return z, family, per_sample


def test_weight_one_is_todays_loss_bit_for_bit():
    z, family, per_sample = _batch()
    flags = generated_flags({"generated": per_sample}, 4, 6, z.device)
    weights = torch.where(flags, 1.0, 1.0).double()
    assert torch.equal(supcon_loss(z, family, 0.2, pos_weight=weights), supcon_loss(z, family, 0.2))
    # the method: weight 1.0 (the default) and an explicit 1.0 give the loss of the unweighted function
    torch.manual_seed(0)
    views = [torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8) for _ in range(4)]
    losses = []
    for kwargs in ({}, {"gen_positive_weight": 1.0}):
        torch.manual_seed(1)
        model = SupCon(_cfg(kwargs), steps_per_epoch=1)
        out = model.views_loss([model.normalize(v) for v in views], {"generated": per_sample})
        feats = torch.cat(out["feats"])
        z_model = F.normalize(model.projector(feats), dim=1)
        assert torch.equal(out["loss"], supcon_loss(z_model, family, 0.2))
        losses.append(out["loss"])
    assert torch.equal(losses[0], losses[1])


def test_hand_computed_case():
    """One family [orig, orig, gen]: z0 = z1 = e1, z2 = e2, temperature 1. Anchor 0 (and 1): its
    denominator is e^1 + e^0, its positives 1 (weight 1) and 2 (weight w), so its term is
    log(e + 1) - 1 / (1 + w); anchor 2 (generated) has two original positives at similarity 0: log 2."""
    w = 0.5
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    family = torch.zeros(3, dtype=torch.long)
    weights = torch.tensor([1.0, 1.0, w], dtype=torch.float64)
    expected = (2 * (math.log(math.e + 1) - 1 / (1 + w)) + math.log(2)) / 3
    assert supcon_loss(z, family, 1.0, pos_weight=weights).item() == pytest.approx(expected, abs=1e-12)
    assert supcon_loss(z, family, 1.0).item() == pytest.approx((2 * (math.log(math.e + 1) - 0.5) + math.log(2)) / 3,
                                                               abs=1e-12)


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_weighted_loss_matches_the_loop_reference(w):
    z, family, per_sample = _batch(seed=3)
    flags = generated_flags({"generated": per_sample}, 4, 6, z.device)
    weights = torch.where(flags, w, 1.0).double()
    ours = supcon_loss(z, family, 0.2, pos_weight=weights).item()
    assert ours == pytest.approx(loop_loss(z, family, 0.2, lambda j: float(weights[j])), abs=1e-10)
    assert ours != pytest.approx(supcon_loss(z, family, 0.2).item(), abs=1e-4)  # the weight changes the loss


def test_weight_to_zero_drops_generated_positives_but_keeps_them_in_the_denominator():
    z, family, per_sample = _batch(seed=5)
    flags = generated_flags({"generated": per_sample}, 4, 6, z.device)
    without = loop_loss(z, family, 0.2, lambda j: 0.0 if flags[j] else 1.0)
    # not the same as removing them from the batch: they stay negatives / in the denominator
    keep = ~flags
    removed = supcon_loss(z[keep], family[keep], 0.2).item()
    assert abs(without - removed) > 1e-3
    for w in (0.0, 1e-9):
        weights = torch.where(flags, w, 1.0).double()
        assert supcon_loss(z, family, 0.2, pos_weight=weights).item() == pytest.approx(without, abs=1e-7)
    # members [orig, gen]: at weight 0 the original anchor has no positive left and adds 0, as an
    # anchor without positives always did; the generated anchor still pulls towards the original
    z2, fam2 = z[:12], torch.arange(6).repeat(2)
    weights = torch.cat([torch.ones(6), torch.zeros(6)]).double()
    gen_anchors = supcon_loss(z2[6:], fam2[6:], 0.2, z2, fam2, offset=6)
    assert supcon_loss(z2, fam2, 0.2, pos_weight=weights).item() == pytest.approx(gen_anchors.item() / 2, abs=1e-12)


def test_flags_follow_the_drawn_batch_not_the_view_index():
    per_sample = torch.tensor([[False, True], [False, False], [False, True]])  # members [orig, gen?]
    flags = generated_flags({"generated": per_sample}, 2, 3, "cpu")
    assert flags.tolist() == [False, False, False, True, False, True]  # view-major: view 0 of all, then view 1
    assert generated_flags({}, 2, 3, "cpu").tolist() == [False] * 6


def test_ranks_together_give_the_single_process_loss():
    """Under DDP each rank scores its own anchors against the gathered contrast set; with equal
    batches the mean of the ranks' losses is the loss of the whole batch."""
    world, b, m = 2, 4, 3
    gen = torch.Generator().manual_seed(7)
    z_ranks = [F.normalize(torch.randn(m * b, 8, generator=gen, dtype=torch.float64), dim=1) for _ in range(world)]
    g_ranks = [torch.rand(m * b, generator=gen) < 0.4 for _ in range(world)]
    fam_ranks = [torch.arange(b).repeat(m) + r * b for r in range(world)]
    all_z, all_fam, all_g = torch.cat(z_ranks), torch.cat(fam_ranks), torch.cat(g_ranks)
    weights = torch.where(all_g, 0.3, 1.0).double()
    per_rank = [supcon_loss(z_ranks[r], fam_ranks[r], 0.2, all_z, all_fam, offset=r * m * b, pos_weight=weights)
                for r in range(world)]
    whole = supcon_loss(all_z, all_fam, 0.2, pos_weight=weights)
    assert torch.stack(per_rank).mean().item() == pytest.approx(whole.item(), abs=1e-12)


GLOO_SCRIPT = """
import sys, torch, torch.distributed as dist, torch.nn.functional as F
from gcl.train.methods.supcon import family_loss
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
data = torch.load(out + "/in.pt", weights_only=True)
b = data["b"]
z, gen = data["z"][rank], data["gen"][rank]
loss = family_loss(z, torch.arange(b).repeat(3), b, 0.2, gen, 0.3)
torch.save({"loss": loss}, f"{out}/rank{rank}.pt")
dist.destroy_process_group()
"""


def test_gloo_ranks_weight_their_own_generated_positives(tmp_path):
    """Two real gloo ranks: each rank's anchors are scored against the gathered contrast set, with its
    own generated members weighted where they sit in it (a family, hence every positive, is on one rank)."""
    b = 4
    gen = torch.Generator().manual_seed(11)
    z = [F.normalize(torch.randn(3 * b, 8, generator=gen), dim=1) for _ in range(2)]
    flags = [torch.rand(3 * b, generator=gen) < 0.5 for _ in range(2)]
    flags[1][b:] = True  # rank 1: members 1 and 2 of every family generated
    torch.save({"b": b, "z": z, "gen": flags}, tmp_path / "in.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "rank.py"
    script.write_text(GLOO_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(port), str(tmp_path)]) for r in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    all_z, all_fam = torch.cat(z), torch.cat([torch.arange(b).repeat(3) + r * b for r in range(2)])
    weights = torch.where(torch.cat(flags), 0.3, 1.0)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["loss"]
        fam = torch.arange(b).repeat(3) + r * b
        expected = supcon_loss(z[r], fam, 0.2, all_z, all_fam, offset=r * 3 * b, pos_weight=weights)
        unweighted = supcon_loss(z[r], fam, 0.2, all_z, all_fam, offset=r * 3 * b)
        assert got.item() == pytest.approx(expected.item(), abs=1e-6)
        assert abs(got.item() - unweighted.item()) > 1e-3


def _cfg(kwargs):
    return TrainConfig(method="supcon", method_kwargs={"proj_hidden_dim": 32, "proj_output_dim": 16, **kwargs},
                       augmentations=[AugConfig(crop_size=32)], cifar_stem=False, shards=["x.json"], epochs=1,
                       backbone="resnet20").to_dict()


@pytest.mark.parametrize("bad", [-0.5, "0.5", None, True, float("nan"), float("inf"), [0.5]])
def test_invalid_weights_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError, match="gen_positive_weight must be a number >= 0") as exc:
        SupCon.check_kwargs({"gen_positive_weight": bad}, "supcon")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="unknown method_kwargs gen_positive_weigth for supcon"):
        SupCon.check_kwargs({"gen_positive_weigth": 0.5}, "supcon")
    from gcl.train.methods.simclr import SimCLR  # a method without generated-positive weighting

    with pytest.raises(ConfigError, match="unknown method_kwargs gen_positive_weight for simclr"):
        SimCLR.check_kwargs({"gen_positive_weight": 0.5}, "simclr")


def test_recipe_check_and_gcl_train_refuse_a_bad_weight_before_reading_data(tmp_path):
    from gcl.train.check import check_recipe

    recipe = tmp_path / "r.yaml"
    base = {"method": "supcon", "members": ["orig", "orig", "gen"]}
    recipe.write_text(yaml.safe_dump({**base, "method_kwargs": {"gen_positive_weight": 0.5}}))
    assert check_recipe(str(recipe)) is None
    recipe.write_text(yaml.safe_dump({**base, "method_kwargs": {"gen_positive_weight": -1}}))
    assert "key 'method_kwargs.gen_positive_weight': must be greater than or equal to 0" in check_recipe(str(recipe))
    exe = Path(sys.executable).with_name("gcl-train")
    proc = subprocess.run([str(exe), "--recipe", str(recipe), "--shards", str(tmp_path / "missing.json"),
                           "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "key 'method_kwargs.gen_positive_weight': must be greater" in proc.stderr  # before the missing shards are noticed


def test_weighted_training_step_uses_the_batch_flags_and_learns():
    torch.manual_seed(0)
    model = SupCon(_cfg({"gen_positive_weight": 0.5}), steps_per_epoch=1)
    base = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    views = [(base.int() + torch.randint(-20, 21, base.shape)).clamp(0, 255).to(torch.uint8) for _ in range(3)]
    per_sample = torch.zeros(8, 3, dtype=torch.bool)
    per_sample[:, 2] = True
    normed = [model.normalize(v) for v in views]
    with torch.no_grad():
        weighted = model.views_loss(normed, {"generated": per_sample})["loss"]
        unflagged = model.views_loss(normed, {"generated": torch.zeros_like(per_sample)})["loss"]
    assert not torch.equal(weighted, unflagged)  # the flags reach the loss
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model.views_loss(normed, {"generated": per_sample})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
