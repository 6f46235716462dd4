"""SimSiam (Chen & He 2021): predictor + stop-gradient, no negatives and no momentum encoder."""

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


class SimSiam(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn CIFAR recipe
        "proj_output_dim": 2048,
        "pred_hidden_dim": 512,  # bottleneck predictor (paper)
    }

    def build_heads(self):
        k = self.kw
        self.projector = SimSiamProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])
        self.predictor = SimSiamPredictionHead(k["proj_output_dim"], k["pred_hidden_dim"], k["proj_output_dim"])
        self.criterion = NegativeCosineSimilarity()

    def views_loss(self, views, batch):
        feats = self.backbone(torch_cat(views))
        z = self.projector(feats)
        p = self.predictor(z).chunk(2)
        z = z.detach().chunk(2)
        loss = 0.5 * (self.criterion(p[0], z[1]) + self.criterion(p[1], z[0]))
        return {"loss": loss, "feats": list(feats.chunk(2))}
