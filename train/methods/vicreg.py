"""VICReg (Bardes et al. 2022): invariance + variance + covariance terms on the projections."""

from lightly.loss import VICRegLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from gcl.train.methods.base import BaseMethod
from gcl.train.methods.simclr import torch_cat


class VICReg(BaseMethod):
    default_kwargs = {
        "proj_hidden_dim": 2048,  # solo-learn CIFAR recipe
        "proj_output_dim": 2048,
        "sim_loss_weight": 25.0,  # paper / solo-learn weights
        "var_loss_weight": 25.0,
        "cov_loss_weight": 1.0,
    }

    def build_heads(self):
        k = self.kw
        # VICReg's expander is the same Linear-BN-ReLU x2 + Linear stack as Barlow Twins'.
        self.projector = BarlowTwinsProjectionHead(self.feat_dim, k["proj_hidden_dim"], k["proj_output_dim"])
        self.criterion = VICRegLoss(lambda_param=k["sim_loss_weight"], mu_param=k["var_loss_weight"],
                                    nu_param=k["cov_loss_weight"], gather_distributed=True)

    def views_loss(self, views, batch):
        feats = self.backbone(torch_cat(views))
        z = self.projector(feats).chunk(2)
        return {"loss": self.criterion(z[0], z[1]), "feats": list(feats.chunk(2))}
