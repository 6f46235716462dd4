"""Linear probe on frozen (cached) features for gcl-eval (gcl-train's online probe is its own).

Defaults follow solo-learn's linear protocol (its scripts/linear recipes, which exist for
ImageNet-100/ImageNet only): SGD with momentum 0.9, no weight decay, batch 256, 100 epochs, step
schedule dividing the lr by 10 at epochs 60 and 80. Its lr there is 1.0-3.0 for 224 px backbones;
with no CIFAR recipe published we keep 0.1 (its older generic linear script's value), and
`--lr` / a recipe overrides it. Deviation, on purpose: solo-learn re-runs the frozen backbone on
augmented crops each epoch; we train on cached features of the un-augmented images, which makes
a probe take seconds instead of an hour on CPU and typically costs ~1 point of accuracy.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from gcl.knn import topk_accuracy


@dataclass
class LinearRecipe:
    epochs: int = 100  # solo-learn max_epochs for CIFAR linear eval
    batch_size: int = 256  # solo-learn batch_size
    lr: float = 0.1  # solo-learn lr (batch 256)
    momentum: float = 0.9  # solo-learn SGD momentum
    weight_decay: float = 0.0  # solo-learn: weight_decay 0 for the linear head
    schedule: str = "step"  # "step" (solo-learn) or "cosine"
    milestones: list[int] = field(default_factory=lambda: [60, 80])  # solo-learn lr_decay_steps
    gamma: float = 0.1  # step schedule divides the lr by 10 at each milestone
    standardize: bool = False  # solo-learn feeds raw backbone features; True z-scores them (train stats)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "LinearRecipe":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown linear recipe keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})")
        r = cls(**d)
        if r.schedule not in ("step", "cosine"):
            raise ValueError(f"linear schedule must be 'step' or 'cosine', not {r.schedule!r}")
        return r

    def to_dict(self) -> dict:
        return asdict(self)


def load_recipe(path: str | os.PathLike | None, **overrides) -> LinearRecipe:
    """Defaults, then a YAML file's `linear:` section (or the whole file), then non-None overrides."""
    d: dict = {}
    if path:
        from gcl.yamlsafe import read_shared_file

        # gcl.yamlsafe: a python/* tag is an error (safe_load constructs no objects), aliases are capped
        data = read_shared_file(path, "linear recipe", ValueError, kind="plain YAML") or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a YAML mapping")
        d.update(_from_solo_learn(data) if "optimizer" in data else data.get("linear", data))
    d.update({k: v for k, v in overrides.items() if v is not None})
    return LinearRecipe.from_dict(d)


def _from_solo_learn(y: dict) -> dict:
    """Map a solo-learn linear yaml (optimizer/scheduler/max_epochs) onto LinearRecipe keys."""
    opt, sch = y.get("optimizer") or {}, y.get("scheduler") or {}
    if opt.get("name", "sgd") != "sgd":
        raise ValueError(f"only the SGD linear protocol is implemented, not {opt.get('name')!r}")
    out = {"epochs": y.get("max_epochs"), "batch_size": opt.get("batch_size"), "lr": opt.get("lr"),
           "weight_decay": opt.get("weight_decay"), "momentum": (opt.get("kwargs") or {}).get("momentum"),
           "milestones": sch.get("lr_decay_steps")}
    if sch.get("name"):
        out["schedule"] = "step" if sch["name"] == "step" else "cosine"  # warmup_cosine/cosine -> cosine
    return {k: v for k, v in out.items() if v is not None}


def train_linear(train_features: torch.Tensor, train_labels: torch.Tensor, num_classes: int,
                 recipe: LinearRecipe = LinearRecipe()) -> tuple[nn.Module, dict]:
    """Fit nn.Linear on frozen features; returns (classifier incl. standardisation, train stats)."""
    g = torch.Generator().manual_seed(recipe.seed)
    x = train_features.float()
    y = train_labels.long()
    mean = x.mean(0) if recipe.standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp_min(1e-6) if recipe.standardize else torch.ones(x.shape[1])
    head = nn.Linear(x.shape[1], num_classes)
    # Same init as nn.Linear's default, but from our generator so a probe is reproducible.
    with torch.no_grad():
        bound = 1.0 / x.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.SGD(head.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.schedule == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(recipe.milestones), gamma=recipe.gamma)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, recipe.epochs))
    xs = (x - mean) / std
    loss = torch.tensor(float("nan"))
    for _epoch in range(recipe.epochs):
        perm = torch.randperm(len(xs), generator=g)
        for start in range(0, len(xs), recipe.batch_size):
            idx = perm[start:start + recipe.batch_size]
            loss = F.cross_entropy(head(xs[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()  # the schedule is per epoch, as in solo-learn (interval: epoch)
    if not torch.isfinite(loss):
        raise FloatingPointError("linear probe diverged (loss is not finite); lower lr or use standardize")
    classifier = _Standardized(head, mean, std).eval()
    with torch.no_grad():
        train_acc = topk_accuracy(classifier(x), y)
    return classifier, {"final_loss": loss.item(), "train_top1": train_acc["top1"]}


class _Standardized(nn.Module):
    def __init__(self, head: nn.Linear, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return self.head((x.float() - self.mean) / self.std)


def linear_accuracy(train_features, train_labels, test_features, test_labels, num_classes,
                    recipe: LinearRecipe = LinearRecipe()) -> dict[str, float]:
    """{'top1', 'top5', 'train_top1', 'final_loss'} of a linear probe (percentages)."""
    classifier, stats = train_linear(train_features, train_labels, num_classes, recipe)
    with torch.no_grad():
        acc = topk_accuracy(classifier(test_features), test_labels.long())
    return {**acc, **stats}
