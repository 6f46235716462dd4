"""gcl-train --resume: options come back from run.json; a result-changing option is refused in
one line; run.json keeps its options and a finished run's metrics; a stopped run never says running."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from click.testing import CliRunner
from lightning.pytorch.callbacks import Callback

from test_train_data import CIFAR_TEST, make_shards

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.cli import main  # noqa: E402
from gcl.train.config import load_config  # noqa: E402
from gcl.train.run import train  # noqa: E402

# Non-default options everywhere, so a resume that fell back to defaults could not pass.
RECIPE = {"method": "simclr", "backbone": "resnet20", "batch_size": 16, "gen_prob": 0.25, "seed": 3, "epochs": 2,
          "num_workers": 1, "shuffle_buffer": 50, "eval_limit": 64, "method_kwargs": {"proj_output_dim": 32},
          "optimizer": {"name": "sgd", "lr": 0.1}}


class CrashAfterFirstEpoch(Callback):
    """Stands for a killed sitting: after epoch 0's last.ckpt is saved, the run dies."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            raise RuntimeError("simulated crash")


def _crashed_run(tmp_path):
    manifest = make_shards(tmp_path / "s", n=64, per_shard=16)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    cfg = load_config(str(recipe), {"shards": (str(manifest),), "output": str(out), "eval_train": str(CIFAR_TEST),
                                    "eval_test": str(CIFAR_TEST)})
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, resume=False, extra_callbacks=(CrashAfterFirstEpoch(),))
    return out, cfg


def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_resume_needs_no_other_option_and_refuses_changes(tmp_path):
    out, cfg = _crashed_run(tmp_path)
    stopped = json.loads((out / "run.json").read_text())
    assert stopped["status"] == "stopped" and "simulated crash" in stopped["error"]

    before = (out / "run.json").read_bytes()
    for extra, needle in ((["--gen-prob", "0.3"], "--gen-prob 0.3 (the run's: 0.25)"),
                          (["--method", "byol"], "--method byol (the run's: simclr)"),
                          (["--epochs", "3"], "--epochs 3 (the run's: 2)"),
                          (["--shards", str(tmp_path / "s" / "fix-000000.tar")], "--shards")):
        r = CliRunner().invoke(main, ["--output", str(out), "--resume"] + extra)
        _one_line_error(r, needle, "keeps its options")
        assert (out / "run.json").read_bytes() == before  # refused before any work: nothing rewritten

    r = CliRunner().invoke(main, ["--output", str(out), "--resume", "--num-workers", "2"])  # harmless: allowed
    assert r.exit_code == 0, r.output
    assert "resuming in" in r.output and "64 images" in r.output and "gen-prob 0.25" in r.output
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["global_step"] == 8 and info["epochs_done"] == 2
    from gcl.train.resume import portable_config

    assert info["config"] == portable_config(cfg.to_dict(), out)  # never rewritten (num_workers stays the run's 1)
    # no absolute path anywhere in run.json: the data are named relative to the run folder
    assert str(tmp_path) not in (out / "run.json").read_text() and info["config"]["eval_train"] == os.path.relpath(
        CIFAR_TEST, out) and info["config"]["output"] == "."
    assert info["config"]["num_workers"] == 1 and "error" not in info
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["cfg"]["backbone"] == "resnet20" and ckpt["global_step"] == 8
    with open(out / "metrics.csv") as fh:  # the first sitting's epoch is kept in the log
        import csv

        epochs = {row["epoch"] for row in csv.DictReader(fh) if row.get("test_knn_top1")}
    assert epochs == {"0", "1"}

    # a finished run: resuming it trains nothing and keeps run.json (final metrics included) as it is
    finished = (out / "run.json").read_bytes()
    assert json.loads(finished)["final_metrics"]["test_knn_top1"] >= 0
    r = CliRunner().invoke(main, ["--output", str(out), "--resume"])
    assert r.exit_code == 0 and "already finished" in r.output, r.output
    r = CliRunner().invoke(main, ["--output", str(out), "--resume", "--gen-prob", "0.3"])
    _one_line_error(r, "--gen-prob 0.3")
    assert (out / "run.json").read_bytes() == finished


def test_resume_of_a_checkpoint_from_another_model_is_one_line(tmp_path):
    out, _ = _crashed_run(tmp_path)
    info = json.loads((out / "run.json").read_text())
    info["config"]["method"] = info["method"] = "byol"  # run.json and last.ckpt now disagree
    (out / "run.json").write_text(json.dumps(info))
    r = CliRunner().invoke(main, ["--output", str(out), "--resume"])
    _one_line_error(r, "made by another model", "method simclr (run.json: byol)")
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"


def test_resume_without_a_run_is_one_line(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty" / "checkpoints" / "last.ckpt").write_bytes(b"")
    r = CliRunner().invoke(main, ["--output", str(tmp_path / "empty"), "--resume"])
    _one_line_error(r, "run.json not found")


def test_resume_never_runs_a_command_read_from_run_json(tmp_path):
    """run.json is a file in a folder that may come from someone else: a pipe: shard base in it is
    not restored; the user types it again or the resume stops in one line."""
    from gcl.train.config import TrainConfig

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"")
    marker = tmp_path / "ran"
    cfg = TrainConfig(shards=["m.manifest.json"], shards_base=f"pipe:touch {marker}; cat ", output=str(out))
    (out / "run.json").write_text(json.dumps({"config": cfg.to_dict(), "status": "stopped"}))
    r = CliRunner().invoke(main, ["--output", str(out), "--resume"])
    _one_line_error(r, "a command runs only when typed", "--shards-base")
    assert not marker.exists()


def test_resume_of_a_run_json_from_another_version_is_one_line(tmp_path):
    from gcl.train.config import TrainConfig

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"")
    stored = {**TrainConfig(shards=["m.manifest.json"]).to_dict(), "retired_option": 1}
    (out / "run.json").write_text(json.dumps({"config": stored, "status": "stopped"}))
    r = CliRunner().invoke(main, ["--output", str(out), "--resume"])
    _one_line_error(r, "do not fit this gcl-train", "retired_option")


def test_a_moved_run_folder_is_pointed_at_its_unmoved_data_and_other_bytes_are_refused(tmp_path):
    """run.json names its data relative to the run folder, so a folder moved without its data loses
    them. Given again at their place, the same bytes (sha256 recorded at the start) are accepted and
    run.json then names the new place; a different file under the right name is refused."""
    import shutil

    out, _ = _crashed_run(tmp_path)
    recorded = json.loads((out / "run.json").read_text())["data"]
    assert len(recorded["shards"]) == 64 and len(recorded["eval_train"]) == 64 and recorded["input"] is None
    moved = tmp_path / "elsewhere" / "deeper" / "run"
    moved.parent.mkdir(parents=True)
    shutil.move(out, moved)
    manifest, eval_file = tmp_path / "s" / "fix.manifest.json", str(CIFAR_TEST)
    r = CliRunner().invoke(main, ["--output", str(moved), "--resume"])  # the relative paths now miss
    _one_line_error(r, "--shards", "moved")
    # another shard set under the same name: other bytes, refused before any work
    other = make_shards(tmp_path / "other", n=48, per_shard=16)
    r = CliRunner().invoke(main, ["--output", str(moved), "--resume", "--shards", str(other), "--eval-train", eval_file,
                                  "--eval-test", eval_file])
    _one_line_error(r, "--shards", "keeps its options")
    assert json.loads((moved / "run.json").read_text())["status"] == "stopped"
    r = CliRunner().invoke(main, ["--output", str(moved), "--resume", "--shards", str(manifest), "--eval-train",
                                  eval_file, "--eval-test", eval_file])
    assert r.exit_code == 0, r.output
    info = json.loads((moved / "run.json").read_text())
    assert info["status"] == "finished" and info["global_step"] == 8 and info["data"] == recorded
    assert info["config"]["shards"] == [os.path.relpath(manifest, moved)]  # the data's place now, relative
    r = CliRunner().invoke(main, ["--output", str(moved), "--resume"])  # found again without being named
    assert r.exit_code == 0 and "already finished" in r.output, r.output
