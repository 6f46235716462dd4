"""MoCo v2+: both terms score against the pre-step queue, keys enqueued per view, queue in
checkpoints and continued on --resume."""

import os

import torch
import torch.nn.functional as F
import yaml

from test_train_data import make_shards

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.config import AugConfig, TrainConfig  # noqa: E402
from gcl.train.methods import get_method  # noqa: E402
from gcl.train.methods.mocov2plus import moco_loss  # noqa: E402

KW = {"proj_hidden_dim": 32, "proj_output_dim": 16, "queue_size": 24, "temperature": 0.2}


def _model():
    torch.manual_seed(0)
    cfg = TrainConfig(method="mocov2plus", backbone="resnet20", method_kwargs=KW, input="x",
                      augmentations=[AugConfig(crop_size=32)], gen_prob=0.0)
    return get_method("mocov2plus")(cfg.to_dict(), steps_per_epoch=10)


def test_both_terms_use_the_queue_before_the_step_and_keys_are_enqueued_per_view():
    model = _model().train()
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    before = model.queue.clone()
    out = model.views_loss(views, {})
    with torch.no_grad():
        x = torch.cat(views)
        model.train()
        q = F.normalize(model.projector(model.backbone(x)), dim=1).chunk(2)
        k = F.normalize(model.momentum_projector(model.momentum_backbone(x)), dim=1).chunk(2)
    expected = 0.5 * (moco_loss(q[0], k[1], before[1], 0.2) + moco_loss(q[1], k[0], before[0], 0.2))
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    # the fixed bug: the second term scored against a queue that already held this step's keys
    leaky = 0.5 * (moco_loss(q[0], k[1], before[1], 0.2) + moco_loss(q[1], k[0], torch.cat([k[1], before[0]]), 0.2))
    assert not torch.allclose(out["loss"], leaky, atol=1e-4)
    assert torch.allclose(model.queue[0, :8], k[0], atol=1e-5) and torch.allclose(model.queue[1, :8], k[1], atol=1e-5)
    assert torch.equal(model.queue[:, 8:], before[:, 8:]) and int(model.queue_ptr) == 8
    model.views_loss(views, {})
    model.views_loss(views, {})
    assert int(model.queue_ptr) == 0  # 24 slots, 3 x 8 keys: wrapped around


def StopAfterFirstEpoch():
    """Ends training after epoch 0, as if the sitting ended there (the run is not complete)."""
    from lightning.pytorch.callbacks import Callback

    class Stop(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    return Stop()


class QueueAtStart:
    """Records the queue the model holds when (resumed) training starts."""

    def __init__(self):
        from lightning.pytorch.callbacks import Callback

        outer = self

        class CB(Callback):
            def on_train_start(self, trainer, pl_module):
                outer.queue = pl_module.queue.detach().clone()
                outer.ptr = int(pl_module.queue_ptr)

        self.cb = CB()


def test_queue_saved_in_checkpoint_and_resume_continues_with_it(tmp_path):
    from gcl.train.config import load_config
    from gcl.train.run import train

    m = make_shards(tmp_path / "s", n=32, per_shard=16)
    recipe = tmp_path / "moco.yaml"
    recipe.write_text(yaml.safe_dump({"method": "mocov2plus", "backbone": "resnet20", "method_kwargs": KW,
                                      "num_workers": 1, "shuffle_buffer": 20, "optimizer": {"name": "sgd", "lr": 0.1}}))
    opts = {"shards": (str(m),), "batch_size": 8, "gen_prob": 0.5, "output": str(tmp_path / "run"), "epochs": 2}
    train(load_config(str(recipe), opts), resume=False, extra_callbacks=(StopAfterFirstEpoch(),))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    saved, ptr = ckpt["state_dict"]["queue"], int(ckpt["state_dict"]["queue_ptr"])
    assert saved.shape == (2, 24, 16) and ptr == (4 * 8) % 24  # 4 steps of 8 keys per view
    assert torch.allclose(saved.norm(dim=-1), torch.ones(2, 24), atol=1e-5)
    probe = QueueAtStart()
    train(load_config(str(recipe), opts), resume=True, extra_callbacks=(probe.cb,))
    assert torch.equal(probe.queue, saved) and probe.ptr == ptr
