"""Every method's loss goes down on a few optimisation steps of random data."""

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.config import AugConfig, TrainConfig  # noqa: E402
from gcl.train.methods import get_method  # noqa: E402
from gcl.train.methods.supcon import supcon_loss  # noqa: E402

SMALL = {  # small heads keep the test fast; structure is the method's own
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "byol": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 64},
    "mocov2plus": {"proj_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 64},
    "barlow_twins": {"proj_hidden_dim": 64, "proj_output_dim": 64},
    "vicreg": {"proj_hidden_dim": 64, "proj_output_dim": 64},
    "simsiam": {"proj_hidden_dim": 64, "proj_output_dim": 64, "pred_hidden_dim": 16},
    "supcon": {"proj_hidden_dim": 64, "proj_output_dim": 32},
}


@pytest.mark.parametrize("method", sorted(SMALL))
def test_loss_decreases(method):
    torch.manual_seed(0)
    cfg = TrainConfig(method=method, method_kwargs=SMALL[method], augmentations=[AugConfig(crop_size=32)],
                      cifar_stem=False, shards=["x.json"], epochs=1)  # ImageNet stem at 32 px: cheap on CPU
    model = get_method(method)(cfg.to_dict(), steps_per_epoch=10, num_classes=0, world_size=1)
    base = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    n_views = 3 if method == "supcon" else 2
    views = [(base.int() + torch.randint(-20, 21, base.shape)).clamp(0, 255).to(torch.uint8) for _ in range(n_views)]
    if method == "mocov2plus":
        # The same 8 images every step: a FIFO of their own past keys would hold near-copies of
        # the positives. Out of training mode nothing is enqueued, so the negatives stay the
        # random initial keys; the queue itself is tested in test_train_moco.py.
        model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        out = model.views_loss([model.normalize(v) for v in views], {})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if model.momentum_pairs():
            from lightly.models.utils import update_momentum

            for a, b in model.momentum_pairs():
                update_momentum(a, b, 0.9)
        losses.append(out["loss"].item())
        assert len(out["feats"]) == n_views and out["feats"][0].shape == (8, model.feat_dim)
    assert losses[-1] < losses[0], losses


def test_supcon_two_views_equals_ntxent():
    from lightly.loss import NTXentLoss

    torch.manual_seed(0)
    a, b = torch.nn.functional.normalize(torch.randn(8, 16), dim=1), torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    fam = torch.arange(8).repeat(2)
    ours = supcon_loss(torch.cat([a, b]), fam, 0.5)
    ref = NTXentLoss(temperature=0.5)(a, b)
    assert torch.allclose(ours, ref, atol=1e-5)
