"""Shared base of every method: backbone + (method) heads, optimizer and warmup-cosine schedule,
the online linear probe on detached features, and online kNN / probe evaluation.

A method subclass sets `default_kwargs` (its recipe knobs, each commented), builds its heads in
`build_heads()` and returns a dict from `views_loss(views)` with at least `loss` and `feats`
(the backbone features of every view, used by the probe). Losses come from lightly.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from gcl.knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_predict
from gcl.backbones import build_backbone
from gcl.checkpoint import CKPT_INFO_KEY
from gcl.train.augment import augment_seed, augment_views
from gcl.train.config import WARMUP_MAX_FRACTION, AugConfig, ConfigError


class BaseMethod(L.LightningModule):
    default_kwargs: dict = {}
    num_views: int = 2  # views per family this loss consumes (supcon: --family-views)

    def __init__(self, cfg: dict, steps_per_epoch: int, num_classes: int = 0, world_size: int = 1):
        super().__init__()
        # Plain dicts / ints only: the checkpoint must load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.cfg = cfg
        self.check_kwargs(cfg["method_kwargs"], cfg["method"])
        self.kw = {**self.default_kwargs, **cfg["method_kwargs"]}
        self.resolution = cfg["augmentations"][0]["crop_size"]
        self.backbone, self.feat_dim = build_backbone(cfg["backbone"], cfg["cifar_stem"], self.resolution)
        # NHWC: oneDNN's CPU convolutions run ~1.8x faster on it (ResNet-20, 2 cores), and GPUs'
        # tensor-core kernels prefer it too; normalize() hands inputs over in the same layout.
        self.backbone.to(memory_format=torch.channels_last)
        self.classifier = nn.Linear(self.feat_dim, num_classes) if num_classes else None
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.steps_per_epoch, self.world_size = steps_per_epoch, world_size
        self.total_steps = cfg["epochs"] * steps_per_epoch
        self.eval_bank = None  # (uint8 images NCHW, labels): see set_eval
        self.eval_names: list[str] = []  # query sets, one val dataloader each, e.g. ["val", "test"]
        self.augs = [AugConfig(**a) for a in cfg["augmentations"]]
        gen_aug = cfg.get("gen_augmentations")
        self.gen_aug = AugConfig(**gen_aug) if gen_aug else None
        self.build_heads()

    # -- subclass API ---------------------------------------------------------------------
    @classmethod
    def check_kwargs(cls, kwargs: dict, method: str) -> None:
        """A one-line ConfigError for a method_kwargs key this method does not have (a subclass adds
        checks of its values); called before any data is read, and by gcl.train.check."""
        unknown = sorted(set(kwargs) - set(cls.default_kwargs))
        if unknown:
            raise ConfigError(f"unknown method_kwargs {', '.join(unknown)} for {method}; "
                              f"allowed: {', '.join(cls.default_kwargs)}")

    def build_heads(self) -> None:
        raise NotImplementedError

    def views_loss(self, views: list[torch.Tensor], batch: dict) -> dict:
        raise NotImplementedError

    def flops_per_family(self, views: int, families: int = 4) -> int:
        """FLOPs of one family's share of a training step: each of its `views` through the backbone and
        heads, the loss and the backward pass, counted by torch's FlopCounterMode on a copy fed random
        inputs (the model, its queue and its statistics stay untouched). Handcrafted augmentation and
        the online probe are left out: they are the same in every arm of a study."""
        import copy

        from torch.utils.flop_counter import FlopCounterMode

        probe = copy.deepcopy(self).cpu().train()
        gen = torch.Generator().manual_seed(0)
        x = [torch.rand(families, 3, self.resolution, self.resolution, generator=gen) for _ in range(views)]
        batch = {"label": torch.zeros(families, dtype=torch.long),
                 "generated": torch.zeros(families, views, dtype=torch.bool)}
        with FlopCounterMode(display=False) as counter:
            probe.views_loss([probe.normalize(v) for v in x], batch)["loss"].backward()
        return int(counter.get_total_flops()) // families

    # -- training -------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (0-255) or augmented floats (0-1) -> normalized floats."""
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def augment(self, batch: dict) -> list[torch.Tensor]:
        """The handcrafted views of this step, drawn from (seed, epoch, step, rank): a resumed or
        repeated run draws the same crops, flips and colours."""
        gen = torch.Generator().manual_seed(
            augment_seed(self.cfg["seed"], self.current_epoch, self.global_step, self.global_rank))
        return augment_views(batch["views"], batch.get("generated"), self.augs, self.gen_aug, gen)

    def training_step(self, batch, batch_idx):
        views = [self.normalize(v) for v in self.augment(batch)]
        out = self.views_loss(views, batch)
        loss = out["loss"]
        bs = views[0].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=bs)
        for k, v in out.items():
            if k not in ("loss", "feats") and torch.is_tensor(v) and v.ndim == 0:
                self.log(f"train_{k}", v, batch_size=bs)
        labels = batch["label"]
        if self.classifier is not None and bool((labels >= 0).all()):
            # Probe on detached features (solo-learn): it measures the encoder, never trains it.
            feats = torch.cat(out["feats"]).detach()
            y = labels.repeat(len(out["feats"]))
            logits = self.classifier(feats)
            ce = F.cross_entropy(logits, y)
            self.log("train_class_loss", ce, batch_size=bs)
            self.log("train_acc1", (logits.argmax(1) == y).float().mean() * 100, batch_size=bs)
            loss = loss + ce
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return loss

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) modules updated by EMA after each step; empty for non-momentum methods."""
        return []

    def on_train_batch_end(self, outputs, batch, batch_idx):
        pairs = self.momentum_pairs()
        if pairs:
            from lightly.models.utils import update_momentum
            from lightly.utils.scheduler import cosine_schedule

            tau = cosine_schedule(self.global_step, max(1, self.total_steps), self.kw["base_tau"], self.kw["final_tau"])
            for online, target in pairs:
                update_momentum(online, target, m=tau)
            self.log("tau", tau, batch_size=batch["label"].shape[0])

    # -- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        oc, sc = self.cfg["optimizer"], self.cfg["scheduler"]
        # solo-learn scales lr linearly with the total batch (batch x devices x nodes / 256).
        scale = self.cfg["batch_size"] * self.world_size / 256
        lr, clr = oc["lr"] * scale, oc["classifier_lr"] * scale
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad or name.startswith("classifier."):
                continue
            (no_decay if oc["exclude_bias_n_norm"] and p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "lr": lr, "weight_decay": oc["weight_decay"]}]
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})  # LARS skips wd=0 groups
        if self.classifier is not None:
            groups.append({"params": list(self.classifier.parameters()), "lr": clr, "weight_decay": 0.0})
        if oc["name"] == "lars":
            from lightly.utils.lars import LARS

            opt = LARS(groups, lr=lr, momentum=oc["momentum"], trust_coefficient=oc["eta_lars"])
        elif oc["name"] == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=oc["momentum"])
        else:
            opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(oc["betas"]))
        if sc["name"] == "none":
            return opt
        # a short run still leaves its warm-up: at most WARMUP_MAX_FRACTION of the epochs
        warm = int(min(sc["warmup_epochs"], WARMUP_MAX_FRACTION * self.cfg["epochs"]) * self.steps_per_epoch)
        total = max(self.total_steps, warm + 1)
        start_f, min_f = sc["warmup_start_lr"] / max(oc["lr"], 1e-12), sc["min_lr"] / max(oc["lr"], 1e-12)

        def factor(step: int) -> float:
            if step < warm:
                return start_f + (1 - start_f) * step / warm
            t = min(1.0, (step - warm) / (total - warm))
            return min_f + (1 - min_f) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- online evaluation ----------------------------------------------------------------
    @torch.no_grad()
    def features(self, x_uint8: torch.Tensor, batch: int = 512) -> torch.Tensor:
        out = []
        for i in range(0, x_uint8.shape[0], batch):
            out.append(self.backbone(self.normalize(x_uint8[i:i + batch].to(self.device))).float())
        return torch.cat(out)

    def set_eval(self, bank: tuple[torch.Tensor, torch.Tensor], names: list[str]) -> None:
        """The kNN bank (uint8 NCHW images, labels) and the names of the query sets ("val",
        "test"), in the order of the validation dataloaders; metrics are logged as NAME_knn_top1."""
        self.eval_bank, self.eval_names = bank, list(names)

    def on_validation_epoch_start(self):
        # Every rank embeds the whole bank (<= eval_limit images): simpler than gathering slices
        # of unequal size, and cheap next to an epoch of training.
        x, y = self.eval_bank
        self._bank = (self.features(x), y.to(self.device))
        # per query set: knn correct, linear correct, total
        self._counts = torch.zeros(len(self.eval_names), 3, device=self.device)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        f = self.backbone(self.normalize(x)).float()
        n_cls = int(self._bank[1].max()) + 1 if self.classifier is None else self.classifier.out_features
        ranked = knn_predict(self._bank[0], self._bank[1], f, n_cls, k=DEFAULT_K, temperature=DEFAULT_TEMPERATURE)
        counts = self._counts[dataloader_idx]
        counts[0] += (ranked[:, 0] == y).sum()
        if self.classifier is not None:
            counts[1] += (self.classifier(f).argmax(1) == y).sum()
        counts[2] += y.numel()

    def on_validation_epoch_end(self):
        counts = self.trainer.strategy.reduce(self._counts, reduce_op="sum")
        for name, c in zip(self.eval_names, counts):
            total = max(1.0, c[2].item())
            # add_dataloader_idx=False: names are already unique (val_*, test_*)
            self.log(f"{name}_knn_top1", 100.0 * c[0].item() / total, prog_bar=True, sync_dist=False,
                     add_dataloader_idx=False)
            if self.classifier is not None:
                self.log(f"{name}_linear_top1", 100.0 * c[1].item() / total, sync_dist=False,
                         add_dataloader_idx=False)
        self._bank = None

    # -- checkpoint contract (gcl.checkpoint.load_backbone) --------------------------
    def on_save_checkpoint(self, checkpoint):
        c = self.cfg
        checkpoint[CKPT_INFO_KEY] = {
            "method": c["method"], "backbone": c["backbone"], "cifar_stem": bool(c["cifar_stem"]),
            "resolution": int(self.resolution), "mean": list(c["mean"]), "std": list(c["std"]),
            "epoch": int(self.current_epoch), "global_step": int(self.global_step),
            "shards": " ".join(c["shards"]) if c["shards"] else c["input"], "gen_prob": float(c["gen_prob"]),
            "feat_dim": int(self.feat_dim), "config": c,
        }
