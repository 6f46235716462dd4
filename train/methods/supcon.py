"""Family-level objective: SupCon's multi-positive loss (Khosla et al. 2020) with the view family
as the label, so all M members of a family (orig + generated, each with its own handcrafted
augmentation) are positives of each other - how CLSP uses synthetic positives. With M=2 it is
SimCLR's NT-Xent. lightly has no SupCon loss, hence the few lines below.

`gen_positive_weight` w weights the positives that are generated views: anchor i's term is
-sum_j w_j log p_ij / sum_j w_j over its positives j, with w_j = w for a generated member and 1 for
an original. Which members are generated comes from the batch actually drawn (a `gen?` member is
generated for some samples only). Generated views stay in every denominator and remain anchors.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.models.modules import SimCLRProjectionHead

from gcl.train.config import ConfigError
from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


def supcon_loss(z: torch.Tensor, family: torch.Tensor, temperature: float, all_z: torch.Tensor | None = None,
                all_family: torch.Tensor | None = None, offset: int = 0,
                pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over anchors of -(weighted) mean log p(positive) among all other samples.

    z, family: local anchors (N, d) normalized, (N,); all_z/all_family: the contrast set (every
    rank's samples under DDP); offset: where the local anchors sit inside it. pos_weight: the
    weight of each contrast-set sample when it is a positive (len(all_z),); None: every positive
    weighs 1 (plain SupCon). An anchor whose positives all weigh 0 adds 0, as one without positives.
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
    pos_log_prob = log_prob.masked_fill(~pos, 0.0)
    if pos_weight is None:
        return -(pos_log_prob.sum(1) / pos.sum(1).clamp(min=1)).mean()
    weights = pos.to(log_prob.dtype) * pos_weight.to(log_prob.dtype)[None, :]
    total = weights.sum(1)
    return -((pos_log_prob * weights).sum(1) / torch.where(total > 0, total, torch.ones_like(total))).mean()


def generated_flags(batch: dict, views: int, size: int, device) -> torch.Tensor:
    """Which rows of the view-major concatenation (view 0 of every sample, then view 1, ...) are
    generated members: batch["generated"] is (size, views) per sample; all False without it."""
    generated = batch.get("generated")
    if generated is None:
        return torch.zeros(views * size, dtype=torch.bool, device=device)
    return generated.to(device=device, dtype=torch.bool).T.reshape(-1)


class SupCon(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn's supcon CIFAR recipe
        "proj_output_dim": 256,
        "temperature": 0.2,
        # weight of a generated view as a positive (1.0: plain SupCon; 0: generated views are only
        # anchors and negatives of others, never positives pulled towards)
        "gen_positive_weight": 1.0,
    }

    @classmethod
    def check_kwargs(cls, kwargs: dict, method: str) -> None:
        super().check_kwargs(kwargs, method)
        w = kwargs.get("gen_positive_weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"method_kwargs gen_positive_weight must be a number >= 0 (1.0: plain SupCon), got {w!r}")

    def build_heads(self):
        k = self.kw
        self.projector = SimCLRProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])

    def views_loss(self, views, batch):
        m, b = len(views), views[0].shape[0]
        feats = self.backbone(torch_cat(views))
        z = F.normalize(self.projector(feats), dim=1)
        family = torch.arange(b, device=z.device).repeat(m)
        w = float(self.kw["gen_positive_weight"])
        # weight 1 takes the unweighted path: today's loss exactly, and no flags to gather
        generated = None if w == 1.0 else generated_flags(batch, m, b, z.device)
        loss = family_loss(z, family, b, self.kw["temperature"], generated, w)
        return {"loss": loss, "feats": list(feats.chunk(m))}


def family_loss(z: torch.Tensor, family: torch.Tensor, batch: int, temperature: float,
                generated: torch.Tensor | None, gen_weight: float) -> torch.Tensor:
    """supcon_loss over the whole contrast set: under DDP every rank's samples are gathered; `batch`
    samples per rank (equal on every rank: EpochLoader); generated: which local rows are generated
    members (None: no weighting)."""
    pos_weight = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from lightly.utils.dist import gather

        rank, world = dist.get_rank(), dist.get_world_size()
        local = family + rank * batch  # ids never collide across ranks
        all_z = torch.cat(gather(z))
        all_family = torch.cat([family + r * batch for r in range(world)])
        if generated is not None:
            # A positive shares its anchor's family, and a family lives on one rank: only the local
            # block of the contrast set is ever weighted, so no flags need gathering (the other
            # ranks' samples are negatives here, and negatives are not weighted).
            flags = torch.zeros(world * generated.numel(), dtype=torch.bool, device=z.device)
            flags[rank * generated.numel():(rank + 1) * generated.numel()] = generated
            pos_weight = _weights(flags, gen_weight, z.dtype)
        return supcon_loss(z, local, temperature, all_z, all_family, offset=rank * z.shape[0], pos_weight=pos_weight)
    if generated is not None:
        pos_weight = _weights(generated, gen_weight, z.dtype)
    return supcon_loss(z, family, temperature, pos_weight=pos_weight)


def _weights(generated: torch.Tensor, gen_weight: float, dtype) -> torch.Tensor:
    """Positive weight per sample: gen_weight for generated members, 1 for originals."""
    return torch.where(generated, gen_weight, 1.0).to(dtype)
