"""Barlow Twins (Zbontar et al. 2021): cross-correlation of the two projections towards identity."""

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


class BarlowTwins(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn CIFAR recipe
        "proj_output_dim": 2048,
        "lamb": 0.0051,  # off-diagonal weight (paper / solo-learn)
        "scale_loss": 0.1,  # solo-learn's CIFAR loss scale
    }

    def build_heads(self):
        k = self.kw
        self.projector = BarlowTwinsProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])
        self.criterion = BarlowTwinsLoss(lambda_param=k["lamb"], gather_distributed=True)

    def views_loss(self, views, batch):
        feats = self.backbone(torch_cat(views))
        z = self.projector(feats).chunk(2)
        return {"loss": self.kw["scale_loss"] * self.criterion(z[0], z[1]), "feats": list(feats.chunk(2))}
