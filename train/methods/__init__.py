"""One LightningModule per method, all on methods/base.py; `get_method(name)` picks the class."""

from __future__ import annotations


def get_method(name: str):
    from gcl.train.methods.barlow_twins import BarlowTwins
    from gcl.train.methods.byol import BYOL
    from gcl.train.methods.mocov2plus import MoCoV2Plus
    from gcl.train.methods.simclr import SimCLR
    from gcl.train.methods.simsiam import SimSiam
    from gcl.train.methods.supcon import SupCon
    from gcl.train.methods.vicreg import VICReg

    return {"simclr": SimCLR, "byol": BYOL, "mocov2plus": MoCoV2Plus, "barlow_twins": BarlowTwins,
            "vicreg": VICReg, "simsiam": SimSiam, "supcon": SupCon}[name]
