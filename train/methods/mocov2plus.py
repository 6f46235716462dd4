"""MoCo v2+ (Chen et al. 2020, solo-learn's variant): InfoNCE against an EMA key encoder and a
queue of past keys (lightly's NTXentLoss memory bank), symmetric over the two views."""

import copy

from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


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
        self.criterion = NTXentLoss(temperature=k["temperature"],
                                    memory_bank_size=(k["queue_size"], k["proj_output_dim"]))

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def views_loss(self, views, batch):
        x = torch_cat(views)
        feats = self.backbone(x)
        q = self.projector(feats).chunk(2)
        kk = self.momentum_projector(self.momentum_backbone(x)).detach().chunk(2)
        loss = 0.5 * (self.criterion(q[0], kk[1]) + self.criterion(q[1], kk[0]))
        return {"loss": loss, "feats": list(feats.chunk(2))}
