"""What a user sees of a training run before it starts: one paragraph that says what will be
trained on what and for how long, and none of Lightning's chatter that says nothing about it."""

from __future__ import annotations

import logging
import warnings

from gcl.train.config import WARMUP_MAX_FRACTION, TrainConfig, family_count, warmup_epochs


def run_summary(cfg: TrainConfig, source, steps_per_epoch: int, world: int, params: int) -> str:
    """One paragraph: method, data (images, K, what a family feeds), steps per epoch, epochs, output."""
    if source.shard_set:
        data = f"{source.total} images from {source.shard_set.description} (K={source.num_views} generated views each"
        members = ",".join(cfg.members) if cfg.members else f"pairing {cfg.pairing}, gen-prob {cfg.gen_prob:g}"
        data += f"; {family_count(cfg)} members per family: {members})"
    else:
        data = f"{source.total} images from {cfg.input} (handcrafted views only)"
    devices = f" x {world} devices" if world > 1 else ""
    if cfg.scheduler.name == "warmup_cosine":
        warm = warmup_epochs(cfg)
        capped = f" (capped at {WARMUP_MAX_FRACTION:.0%} of the epochs)" if warm < cfg.scheduler.warmup_epochs else ""
        sched = f"LR warm-up {warm:g} epochs{capped}, then cosine"
    else:
        sched = "constant LR"
    evals = "online kNN every epoch" if cfg.eval_every == 1 else f"online kNN every {cfg.eval_every} epochs"
    evals = evals if cfg.eval_train else "no online evaluation (add --eval-train and --eval-test)"
    return (f"{cfg.method} on {cfg.backbone} ({params / 1e6:.2f} M parameters), {data}; batch {cfg.batch_size}{devices} -> {steps_per_epoch} steps per "
            f"epoch x {cfg.epochs} epochs = {steps_per_epoch * cfg.epochs} steps; {cfg.optimizer.name} lr "
            f"{cfg.optimizer.lr:g}, {sched}; {evals}; seed {cfg.seed}; output {cfg.output}")


# Lightning's messages that carry nothing for this tool's user: its log-folder warnings (gcl-train
# makes the folder and keeps earlier metrics itself), the device lines and advertising tips (info
# messages), and a deprecation inside Lightning. The model summary (with its "Total FLOPs: 0") is
# turned off in the Trainer; run_summary gives the parameter count.
_QUIET_WARNINGS = (r".*Missing logger folder.*", r".*Experiment logs directory .* exists and is not empty.*",
                   r".*Checkpoint directory .* exists and is not empty.*", r".*isinstance\(treespec, LeafSpec\).*")


def quiet_lightning() -> None:
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # lightly's benchmarking module (gcl.knn) imports pytorch_lightning, whose rank_zero module then
    # takes over the shared rank-zero logger: quiet its names too, before it is imported
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def progress_bar():
    """Lightning's progress bar (Rich when installed, else tqdm) counting epochs from 1 of N, as
    the run summary, run.json's epochs_done and gcl-eval compare do (Lightning shows 0 of N-1)."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    class RichEpochs(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            return f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"

    class TQDMEpochs(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *_):
            super().on_train_epoch_start(trainer, *_)
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    return RichEpochs() if _RICH_AVAILABLE else TQDMEpochs()
