"""BYOL (Grill et al. 2020): online predictor regresses the EMA target's projection."""

import copy

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


class BYOL(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 4096,  # solo-learn CIFAR recipe
        "proj_output_dim": 256,
        "pred_hidden_dim": 4096,
        "base_tau": 0.99,  # EMA start, cosine-increased to final_tau (solo-learn CIFAR)
        "final_tau": 1.0,
    }

    def build_heads(self):
        k = self.kw
        self.projector = BYOLProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])
        self.predictor = BYOLPredictionHead(k["proj_output_dim"], k["pred_hidden_dim"], k["proj_output_dim"])
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.momentum_backbone)
        deactivate_requires_grad(self.momentum_projector)
        self.criterion = NegativeCosineSimilarity()

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def views_loss(self, views, batch):
        x = torch_cat(views)
        feats = self.backbone(x)
        p = self.predictor(self.projector(feats)).chunk(2)
        z = self.momentum_projector(self.momentum_backbone(x)).detach().chunk(2)
        loss = 0.5 * (self.criterion(p[0], z[1]) + self.criterion(p[1], z[0]))
        return {"loss": loss, "feats": list(feats.chunk(2))}
