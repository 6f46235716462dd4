"""One training run: data, model, loggers, checkpoints, resume. The cli only parses options."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gcl.folderlock import FolderLock
from gcl.io import open_nofollow, refuse_links, write_json_atomic
from gcl.provenance import code_version
from gcl.train.config import ConfigError, TrainConfig, resolution
from gcl.train.data import build_train_loader
from gcl.train.epochs import EpochLoader, LoaderPosition
from gcl.train.evalsets import load_eval_sets
from gcl.train.methods import get_method
from gcl.backbones import load_backbone_weights
from gcl.train import stopping
from gcl.train.resume import data_identity, is_complete, portable_config, read_run, relocated
from gcl.train.summary import progress_bar, quiet_lightning, run_summary


RUN_LOCK = ".gcl-train.lock"  # in the run folder: held by the one trainer writing there

class SafeLastCheckpoint(Callback):
    """last.ckpt every N steps and at each epoch end, written to a temp file and renamed, so a
    run killed at any moment (even while saving) resumes from an intact checkpoint."""

    def __init__(self, path: Path, every_n_steps: int):
        self.path, self.every = path, every_n_steps

    def _save(self, trainer):
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)  # Lightning's writer follows links: never write through one left there
        try:
            # all ranks call it; rank 0 writes, then a barrier. weights_only=False: the full state
            # (optimizer, schedulers, loops) that --resume needs; saying so keeps Lightning quiet
            trainer.save_checkpoint(str(tmp), weights_only=False)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half checkpoint; last.ckpt stays intact
            raise
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("gcl-last-ckpt")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every > 0 and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._save(trainer)


class WeightAverage(Callback):
    """checkpoints/avg.ckpt: the mean of the model's weights at the end of each of the last N epochs,
    in the checkpoint contract's format (gcl.checkpoint.load_backbone reads it like last.ckpt).
    The running sum lives in Lightning's checkpoint (state_dict below), so a resumed run averages
    the same epochs. Float tensors (weights, BatchNorm statistics) are averaged; integer counters
    keep their last value. Runs before SafeLastCheckpoint, so each epoch's save includes its term."""

    def __init__(self, path: Path, epochs: int, last_n: int):
        self.path, self.first = path, max(0, epochs - last_n)
        self.sum: dict[str, torch.Tensor] = {}
        self.count = 0

    def state_dict(self) -> dict:
        return {"sum": self.sum, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sum, self.count = dict(state["sum"]), int(state["count"])

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch < self.first:
            return
        for k, v in pl_module.state_dict().items():
            v = v.detach().to("cpu", copy=True)
            self.sum[k] = self.sum[k] + v.double() if k in self.sum and v.is_floating_point() else (
                v.double() if v.is_floating_point() else v)
        self.count += 1
        if trainer.current_epoch == trainer.max_epochs - 1 and trainer.is_global_zero:
            ref = pl_module.state_dict()
            avg = {k: (v / self.count).to(ref[k].dtype) if v.is_floating_point() else v for k, v in self.sum.items()}
            ckpt = {"state_dict": avg, "epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step),
                    "averaged_epochs": self.count}
            pl_module.on_save_checkpoint(ckpt)  # the contract's info block (method, backbone, resolution...)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)  # before last.ckpt's first save made the folder
            tmp.unlink(missing_ok=True)  # torch.save follows links: never write through one left there
            torch.save(ckpt, tmp)
            os.replace(tmp, self.path)


class LoaderDriver(Callback):
    """The one place that reads Lightning's loop state for the data: it hands the loader its
    position before each epoch (and the mid-epoch resume point once, at the start of training),
    and logs the loader's count of corrupt samples it skipped."""

    def __init__(self, loader: EpochLoader):
        self.loader = loader

    def on_train_start(self, trainer, pl_module):
        # After a checkpoint is restored: the batches already trained in this epoch, > 0 only when
        # resuming mid-epoch. Counted from the optimizer steps (one per batch), which a checkpoint
        # saved in on_train_batch_end holds exactly; Lightning's batch_progress.completed is one
        # behind there until its epoch loop resets, after this hook (a resume that skipped that many
        # batches trained one twice and never the epoch's last).
        done = trainer.global_step - trainer.current_epoch * self.loader.steps
        self._hand_over(trainer, done if 0 < done < self.loader.steps else 0)

    def on_train_epoch_start(self, trainer, pl_module):
        self._hand_over(trainer, 0)  # not called when Lightning restarts mid-epoch: on_train_start's value stands

    def _hand_over(self, trainer, skip: int) -> None:
        self.loader.start_epoch(LoaderPosition(trainer.current_epoch, trainer.global_rank, trainer.world_size, skip))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        stopping.raise_if_stopped()  # a stop signal whose exception was swallowed (train/stopping.py)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("skipped_samples", float(self.loader.skipped), batch_size=len(batch["key"]))


class KeyRecorder(Callback):
    """--record-keys: the sample keys each rank trained on, one `STEP KEY` line per sample, a file per
    epoch and rank (audits order, DDP split and resume). Runs before last.ckpt is saved; a resume
    drops the lines of steps after the restored one, so the files hold exactly the batches that
    made the final weights."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_start(self, trainer, pl_module):
        for path in self.folder.glob(f"epoch*-rank{trainer.global_rank}.txt"):
            lines = path.read_text().splitlines(keepends=True)
            kept = [ln for ln in lines if int(ln.split(" ", 1)[0]) <= trainer.global_step]
            if len(kept) < len(lines):
                with open_nofollow(path, "w") as fh:
                    fh.write("".join(kept))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.folder.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step  # already counts this batch
        with open_nofollow(self.folder / f"epoch{trainer.current_epoch:04d}-rank{trainer.global_rank}.txt", "a") as fh:
            fh.write("".join(f"{step} {k}\n" for k in batch["key"]))


def _precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"  # bf16 on CPU is 40-75x slower here (PITFALLS.md)


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r})
    tmp = path.with_name(path.name + ".tmp")
    with open_nofollow(tmp, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _stash_metrics(out: Path, resume_step: int) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; keep the rows before the resume step."""
    rows = _read_rows(out / "metrics.prev.csv") + _read_rows(out / "metrics.csv")
    rows = [r for r in rows if r.get("step") not in (None, "") and int(float(r["step"])) < resume_step]
    _write_rows(out / "metrics.prev.csv", rows)
    (out / "metrics.csv").unlink(missing_ok=True)


def _merge_metrics(out: Path) -> None:
    prev = out / "metrics.prev.csv"
    if prev.exists():
        _write_rows(out / "metrics.csv", _read_rows(prev) + _read_rows(out / "metrics.csv"))
        prev.unlink()


def _load_resume_checkpoint(last: Path) -> dict:
    """last.ckpt as plain tensors and dicts (weights_only): a pickle or another tool's file is one line."""
    try:
        return torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a pickle, a truncated zip, another tool's file
        reason = "weights_only loading refuses it" if "weights only" in str(exc).lower() else _one_line(exc)[:100]
        raise ConfigError(f"--resume: {last} is not a gcl-train checkpoint ({reason})") from None


def _rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


# What decides the shapes of a checkpoint's weights: a resume with other values cannot load it.
MODEL_KEYS = ("method", "backbone", "cifar_stem", "method_kwargs")


def _check_same_model(saved: dict, cfg: TrainConfig, path: Path) -> None:
    made_with = (saved.get("hyper_parameters") or {}).get("cfg") or {}
    now = cfg.to_dict()
    differ = [k for k in MODEL_KEYS if k in made_with and made_with[k] != now[k]]
    if differ:
        shown = ", ".join(f"{k} {made_with[k]} (run.json: {now[k]})" for k in differ)
        raise ConfigError(f"--resume: {path} was made by another model: {shown}; run.json does not describe this "
                          "checkpoint: start a new run in another --output")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__


def train(cfg: TrainConfig, resume: bool, record_keys: bool = False, extra_callbacks: tuple = (), log=None,
          progress: bool = True) -> dict:
    """Run (or --resume) one training run; extra_callbacks: e.g. bench/train_speed.py's step timer;
    log: where the run summary goes (the cli passes click.echo; None: silent); progress: the bar."""
    out = Path(cfg.output)
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.exists():
        raise ConfigError(f"--resume: no checkpoint at {last}; start the run without --resume")
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run; add --resume to continue it or choose another --output")
    previous = read_run(out) if resume else None
    if previous is not None and is_complete(previous, cfg.epochs):
        return {**previous, "already_finished": True}  # nothing to train; run.json and its metrics stay as they are
    get_method(cfg.method).check_kwargs(cfg.method_kwargs, cfg.method)  # before any data is read
    saved = _load_resume_checkpoint(last) if resume else None
    if saved is not None:
        _check_same_model(saved, cfg, last)
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    world = cfg.devices * cfg.num_nodes
    say = log if log is not None and _rank_zero() else (lambda _msg: None)
    loader, source = build_train_loader(cfg, world)
    res = resolution(cfg)
    num_classes, eval_sets = len(source.class_names or []), None
    if cfg.eval_train:
        eval_sets = load_eval_sets(cfg, res)
        num_classes = max(num_classes, eval_sets.num_classes)
    queries = eval_sets.queries if eval_sets else {}
    stored = portable_config(cfg.to_dict(), out)  # what run.json and the checkpoints record: no absolute path
    model = get_method(cfg.method)(stored, loader.steps, num_classes, world)
    if cfg.backbone_weights and not resume:  # a pretrained start, from the path as given (stored: relative to
        load_backbone_weights(model.backbone, cfg.backbone_weights)  # the run folder); resuming loads the checkpoint
    # after every check that can fail: a configuration error stays one line
    say(f"{'resuming' if resume else 'training'} in {out} (run.json, metrics.csv, checkpoints/)")
    say(run_summary(cfg, source, loader.steps, world, sum(p.numel() for p in model.parameters())))
    if source.shard_set and cfg.verify and not source.shard_set.manifests:
        say(f"note: {source.shard_set.description} has no manifest, so nothing was checked (sha256, sample counts, "
            "K, labels); train on the manifest .json to verify the shards")
    val = None
    if queries:
        # one loader per query set, in the order of model.eval_names ("val" first when given)
        model.set_eval((eval_sets.bank.images, eval_sets.bank.labels), list(queries))
        val = [torch.utils.data.DataLoader(torch.utils.data.TensorDataset(q.images, q.labels), batch_size=512)
               for q in queries.values()]
    else:  # no eval sets, no validation step (else Lightning warns, on every DDP rank, that it has no data)
        model.validation_step = None

    rank_zero = _rank_zero()
    # one trainer per run folder: a second one (a rerun study, a second --resume) would write the
    # same last.ckpt.tmp; held until this process ends, released by the kernel if it is killed
    with FolderLock(out, RUN_LOCK, "gcl-train run", "--output") if rank_zero else contextlib.nullcontext():
        if rank_zero:
            # Lightning's loggers and checkpoints write hparams.yaml, metrics.csv, tb/, *.ckpt through
            # any link they find: a run folder someone else prepared may hold none
            refuse_links(out, hint="remove it or choose another --output")
        if resume and rank_zero:
            _stash_metrics(out, int(saved["global_step"]))
        # the code and loader workers of every sitting (a resumed run lists each): what trained is on record
        sitting = {**code_version(), "num_workers": loader.num_workers}
        earlier = previous.get("sittings", []) if previous else []
        # a resumed run keeps the options it started with (train/resume.py refused any that change results)
        # (its data's place excepted: resume_config accepted a new place only for the same bytes)
        info = {"config": relocated(previous["config"], stored) if previous else stored, "method": cfg.method,
                "shards": stored["shards"] or stored["input"], "gen_prob": cfg.gen_prob, "epochs": cfg.epochs,
                "batch_size": cfg.batch_size, "world_size": world, "steps_per_epoch": loader.steps,
                "num_views_in_shards": source.num_views, "train_samples": source.total, "status": "running",
                "sittings": [*earlier, sitting] if isinstance(earlier, list) else [sitting],
                # sha256 of the data files at the start: a moved run folder is pointed at the same bytes
                "data": previous.get("data", {}) if previous else data_identity(cfg.to_dict()),
                # images behind the online numbers (gcl-eval compare shows them next to each number)
                "eval_sizes": eval_sets.sizes() if eval_sets else {}}
        if rank_zero:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "run.json", info)

        # KeyRecorder and WeightAverage before SafeLastCheckpoint: what a step or epoch adds is in its checkpoint
        callbacks = [LoaderDriver(loader), *([KeyRecorder(out / "keys")] if record_keys else []),
                     *([WeightAverage(last.with_name("avg.ckpt"), cfg.epochs, cfg.average_last_epochs)]
                       if cfg.average_last_epochs > 0 else []),
                     SafeLastCheckpoint(last, cfg.ckpt_every_steps)]
        if "val" in queries:
            # best.ckpt is chosen on held-out validation queries only; test_* metrics are never monitored
            callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_knn_top1",
                                             mode="max", save_top_k=1, auto_insert_metric_name=False,
                                             enable_version_counter=False))
        callbacks += [*([progress_bar()] if progress else []), *extra_callbacks]
        trainer = L.Trainer(
            max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
            strategy="ddp" if world > 1 else "auto", precision=_precision(cfg),
            logger=[CSVLogger(save_dir=str(out), name="", version=""), TensorBoardLogger(save_dir=str(out), name="tb", version="")],
            callbacks=callbacks, check_val_every_n_epoch=cfg.eval_every, num_sanity_val_steps=0,
            log_every_n_steps=max(1, min(50, loader.steps)), enable_checkpointing="val" in queries,
            default_root_dir=str(out), enable_model_summary=False,  # run_summary says what matters
            enable_progress_bar=progress,
        )
        try:
            trainer.fit(model, train_dataloaders=loader, val_dataloaders=val, ckpt_path=str(last) if resume else None,
                        weights_only=True)  # resume reads plain tensors/dicts only, never pickled code
        except BaseException as exc:
            if trainer.is_global_zero:  # run.json never says "running" for a run that stopped
                # Ctrl-C (Lightning turns it into SystemExit) or SIGTERM; anything else is an error
                interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, SIGTERMException)) or stopping.received()
                write_json_atomic(out / "run.json", {**info, "status": "interrupted" if interrupted else "stopped",
                                                     "error": _one_line(exc), "global_step": int(trainer.global_step),
                                                     "skipped_samples": int(loader.skipped)})
            if resume and isinstance(exc, RuntimeError) and "loading state_dict" in str(exc):
                raise ConfigError(f"--resume: {last} does not fit this run's {cfg.method} / {cfg.backbone} model "
                                  "(missing or unexpected weights); start a new run in another --output") from None
            raise
        finally:
            if trainer.is_global_zero:
                _merge_metrics(out)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        if trainer.is_global_zero:
            info.update(status="finished", global_step=int(trainer.global_step), epochs_done=int(trainer.current_epoch),
                        skipped_samples=int(loader.skipped), final_metrics=metrics)
            write_json_atomic(out / "run.json", info)
        return info
