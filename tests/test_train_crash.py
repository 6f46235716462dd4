"""gcl-train against crashes, signals and a run folder someone else prepared: the run-folder lock
dies with the trainer (not with its forked workers), SIGTERM ends it with a non-zero status and one
line, links planted in the run folder are refused before anything is written, and run.json or a
manifest cannot ask for more workers or samples than the machine or the bytes hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hostile

os.environ["HF_HUB_OFFLINE"] = "1"


def test_the_run_lock_dies_with_the_trainer_not_with_its_forked_workers(tmp_path):
    """A trainer killed with -9 while a forked child (a loader worker) lives on: the folder is free at once."""
    code = ("import os, sys, time\n"
            "from gcl.folderlock import FolderLock\n"
            "lock = FolderLock(sys.argv[1], '.gcl-train.lock', 'gcl-train run', '--output').__enter__()\n"
            "child = os.fork()\n"
            "if child == 0:\n"
            "    time.sleep(60); os._exit(0)\n"
            "print(child, flush=True); time.sleep(60)\n")
    trainer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    worker = int(trainer.stdout.readline())
    try:
        from gcl.folderlock import FolderBusy, FolderLock

        with pytest.raises(FolderBusy, match=f"pid {trainer.pid}"):  # held while the trainer lives
            FolderLock(tmp_path, ".gcl-train.lock", "gcl-train run", "--output").__enter__()
        trainer.kill()
        trainer.wait(30)
        os.kill(worker, 0)  # the worker outlives the trainer...
        with FolderLock(tmp_path, ".gcl-train.lock", "gcl-train run", "--output"):
            pass  # ...and holds nothing: a --resume right after the kill takes the folder
        with FolderLock(tmp_path, ".gcl-train.lock", "gcl-train run", "--output"):
            with pytest.raises(FolderBusy, match="this process"):  # record locks are per process: refused here
                FolderLock(tmp_path, ".gcl-train.lock", "gcl-train run", "--output").__enter__()
    finally:
        trainer.kill()
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_trainer_and_its_workers_with_a_nonzero_status(tmp_path, stop, status):
    manifest = hostile.shard_set(tmp_path / "set")
    run = tmp_path / "run"
    args = ["--shards", manifest, "--gen-prob", 0, "--epochs", 10_000, "--batch-size", 2, "--num-workers", 2,
            "--accelerator", "cpu", "--output", run, "--ckpt-every-steps", 1, "--backbone", "resnet20"]
    log = tmp_path / "trainer.log"
    with log.open("w") as sink:
        trainer = subprocess.Popen([sys.executable, "-m", "gcl.train.cli", *map(str, args)], stdout=sink,
                                   stderr=subprocess.STDOUT, preexec_fn=hostile.sigint_default)
    try:
        deadline = time.time() + 600  # a safety net for a loaded machine importing Lightning
        workers = []
        while len(workers) < 2 or not (run / "checkpoints" / "last.ckpt").exists():
            assert trainer.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            workers = _children(trainer.pid)
            time.sleep(0.2)
        trainer.send_signal(stop)
        try:
            trainer.wait(60)  # seconds, measured; the margin is for a loaded machine
        except subprocess.TimeoutExpired:
            pytest.fail(f"gcl-train still runs 60 s after {stop.name}; its output ends:\n{log.read_text()[-2000:]}")
    finally:
        if trainer.poll() is None:
            trainer.kill()
    output = log.read_text()
    assert trainer.returncode == status, output[-2000:]
    errors = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and f"stopped by {stop.name}" in errors[0] and "Traceback" not in output, output[-2000:]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    deadline = time.time() + 30
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "a loader worker outlived the trainer"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run of 2 epochs stopped after the first (what --resume continues), trained once per module."""
    from lightning.pytorch.callbacks import Callback

    from gcl.train.config import load_config
    from gcl.train.run import train

    class StopAfterFirstEpoch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    root = tmp_path_factory.mktemp("stopped")
    manifest = hostile.shard_set(root / "set")
    cfg = load_config(None, {"shards": (str(manifest),), "gen_prob": 0.0, "output": str(root / "run"),
                             "num_workers": 0, "backbone": "resnet20", "batch_size": 2, "accelerator": "cpu",
                             "epochs": 2})
    train(cfg, resume=False, extra_callbacks=(StopAfterFirstEpoch(),))
    return root / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run.parent, tmp_path / "copy", symlinks=True)
    return tmp_path / "copy" / "run"


@pytest.mark.parametrize("planted", ["hparams.yaml", ".gcl-train.lock", "metrics.prev.csv.tmp",
                                     "checkpoints/last.ckpt.tmp", "tb"])
def test_links_planted_in_a_run_folder_are_refused_and_their_targets_kept(stopped_run, tmp_path, planted):
    from gcl.train.cli import main

    run = _copy(stopped_run, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir() if planted == "tb" else victim.write_text("precious\n")
    if (run / planted).is_dir():
        import shutil

        shutil.rmtree(run / planted)
    (run / planted).unlink(missing_ok=True)
    (run / planted).symlink_to(victim)
    before = sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()
    result = hostile.invoke(main, ["--output", run, "--resume"])
    assert (sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()) == before
    error = hostile.one_line_error(result)
    assert "is a symbolic link" in error and planted.split("/")[-1] in error, error


def test_without_links_the_stopped_run_resumes(stopped_run, tmp_path):
    from gcl.train.cli import main

    run = _copy(stopped_run, tmp_path)
    result = hostile.invoke(main, ["--output", run, "--resume"])
    assert result.exit_code == 0 and "done: 6 steps" in result.output, result.output[-2000:]


def test_run_json_cannot_ask_for_more_loader_workers_than_cores(stopped_run, tmp_path):
    from gcl.train.config import ConfigError
    from gcl.train.resume import resume_config

    run = _copy(stopped_run, tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["config"]["num_workers"] = 100_000  # past the schema's bound: one line, nothing started
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="key 'num_workers': must be less than or equal to 256"):
        resume_config(str(run), None, {"num_workers": None})
    info["config"]["num_workers"] = os.cpu_count() + 200  # within the bound, past this machine's cores
    (run / "run.json").write_text(json.dumps(info))
    said = []
    cfg = resume_config(str(run), None, {"num_workers": None}, log=said.append)
    assert cfg.num_workers == os.cpu_count()
    assert len(said) == 1 and f"{os.cpu_count() + 200} loader workers" in said[0]
    assert resume_config(str(run), None, {"num_workers": 1}, log=said.append).num_workers == 1  # typed: used


def test_a_manifest_cannot_claim_more_samples_than_its_bytes_hold(tmp_path):
    from gcl.shardset import ShardSetError, open_shard_set
    from gcl.train.cli import main

    manifest = hostile.shard_set(tmp_path / "set")
    m = json.loads(manifest.read_text())
    m["shards"][0]["samples"] = 10**9
    manifest.write_text(json.dumps(m))
    with pytest.raises(ShardSetError, match="claims 1000000000 samples, more than its"):
        open_shard_set(str(manifest))
    result = hostile.invoke(main, ["--shards", manifest, "--no-verify", "--output", tmp_path / "run",
                                   "--accelerator", "cpu", "--epochs", 1])
    assert "claims 1000000000 samples" in hostile.one_line_error(result)
    assert not (tmp_path / "run" / "run.json").exists()
