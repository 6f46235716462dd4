"""SimCLR (Chen et al. 2020): NT-Xent between the two views' projections (lightly's loss/head)."""

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from gcl.train.methods.base import BaseMethod


class SimCLR(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn CIFAR recipe
        "proj_output_dim": 256,  # solo-learn CIFAR recipe
        "temperature": 0.2,  # solo-learn CIFAR recipe (ImageNet uses 0.1)
    }

    def build_heads(self):
        k = self.kw
        self.projector = SimCLRProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])
        # gather_distributed: negatives from all ranks, so DDP matches the single-GPU batch
        self.criterion = NTXentLoss(temperature=k["temperature"], gather_distributed=True)

    def views_loss(self, views, batch):
        feats = list(self.backbone(torch_cat(views)).chunk(len(views)))
        z = [self.projector(f) for f in feats]
        return {"loss": self.criterion(z[0], z[1]), "feats": feats}


def torch_cat(views):
    """One backbone call for all views (faster than one per view; BN sees the whole batch)."""
    import torch

    return torch.cat(views)
