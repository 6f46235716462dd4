"""MoCo v2+ (Chen et al. 2020, solo-learn's variant): InfoNCE of each view's query against the
other view's key from an EMA key encoder, with a queue of past keys as negatives, symmetric.

As in solo-learn, the queue holds one FIFO per view ((2, queue_size, dim)), both loss terms score
against the queue as it was before this step, and only then are this step's keys enqueued: a
query never meets its own view's key among its negatives. The queue and its pointer are
buffers, so they are saved in every checkpoint and --resume continues with the same negatives.
"""

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of the positive key among [k, queue] for L2-normalized q (N,d), k (N,d), queue (Q,d)."""
    pos = (q * k).sum(1, keepdim=True)
    logits = torch.cat([pos, q @ queue.T], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def _gather(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from lightly.utils.dist import gather

        return torch.cat(gather(x))
    return x


class MoCoV2Plus(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn CIFAR recipe
        "proj_output_dim": 256,
        "temperature": 0.2,
        "queue_size": 32768,  # solo-learn CIFAR recipe (mocov2plus.yaml); lower it for tiny pilot sets
        "base_tau": 0.99,  # key encoder EMA, cosine to final_tau
        "final_tau": 0.999,
    }

    def build_heads(self):
        k = self.kw
        self.projector = MoCoProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.momentum_backbone)
        deactivate_requires_grad(self.momentum_projector)
        # random unit vectors until real keys replace them (solo-learn / MoCo initialise the same way)
        self.register_buffer("queue", F.normalize(torch.randn(2, k["queue_size"], k["proj_output_dim"]), dim=-1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """keys (2, N, d): view v's keys go into queue v, overwriting the oldest (FIFO, wraps)."""
        size = self.queue.shape[1]
        n = min(keys.shape[1], size)
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue[:, idx] = keys[:, -n:].to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def views_loss(self, views, batch):
        x = torch_cat(views)
        feats = self.backbone(x)
        q = F.normalize(self.projector(feats), dim=1).chunk(2)
        with torch.no_grad():
            k = F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1).chunk(2)
        queue = self.queue.clone()  # both terms see the queue as it was before this step
        t = self.kw["temperature"]
        loss = 0.5 * (moco_loss(q[0], k[1], queue[1], t) + moco_loss(q[1], k[0], queue[0], t))
        if self.training:
            self.enqueue(torch.stack([_gather(k[0]), _gather(k[1])]))
        return {"loss": loss, "feats": list(feats.chunk(2))}
