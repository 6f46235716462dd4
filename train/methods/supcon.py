"""Family-level objective: SupCon's multi-positive loss (Khosla et al. 2020) with the view family
as the label, so all M members of a family (orig + generated, each with its own handcrafted
augmentation) are positives of each other - how CLSP uses synthetic positives. With M=2 it is
SimCLR's NT-Xent. lightly has no SupCon loss, hence the few lines below."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.models.modules import SimCLRProjectionHead

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


def supcon_loss(z: torch.Tensor, family: torch.Tensor, temperature: float, all_z: torch.Tensor | None = None,
                all_family: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """Mean over anchors of -mean log p(positive) among all other samples.

    z, family: local anchors (N, d) normalized, (N,); all_z/all_family: the contrast set (every
    rank's samples under DDP); offset: where the local anchors sit inside it.
    """
    all_z = z if all_z is None else all_z
    all_family = family if all_family is None else all_family
    sim = z @ all_z.T / temperature
    idx = torch.arange(z.shape[0], device=z.device)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[idx, idx + offset] = True
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (family[:, None] == all_family[None, :]) & ~self_mask
    return -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1)).mean()


class SupCon(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn's supcon CIFAR recipe
        "proj_output_dim": 256,
        "temperature": 0.2,
    }

    def build_heads(self):
        k = self.kw
        self.projector = SimCLRProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])

    def views_loss(self, views, batch):
        m, b = len(views), views[0].shape[0]
        feats = self.backbone(torch_cat(views))
        z = F.normalize(self.projector(feats), dim=1)
        family = torch.arange(b, device=z.device).repeat(m)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from lightly.utils.dist import gather

            rank = dist.get_rank()
            family = family + rank * b  # equal batch per rank (EpochLoader), so ids never collide
            all_z = torch.cat(gather(z))
            all_family = torch.cat([family - rank * b + r * b for r in range(dist.get_world_size())])
            loss = supcon_loss(z, family, self.kw["temperature"], all_z, all_family, offset=rank * z.shape[0])
        else:
            loss = supcon_loss(z, family, self.kw["temperature"])
        return {"loss": loss, "feats": list(feats.chunk(m))}
