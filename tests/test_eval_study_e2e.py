"""gcl-eval study end to end: real gcl-synth (TAEF2) and gcl-train subprocesses on a tiny study.

2 arms x 2 seeds, 1 epoch of 2 steps each: results appear, a second call runs nothing, a run
killed after its checkpoint is resumed, a failing arm is recorded and the study goes on, an edited
arm is refused as stale until --rerun-stale. About 3 minutes on 2 busy CPU cores: marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import SHARED

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.eval.cli import main  # noqa: E402

TRAIN = {"recipe": "cifar10/simclr", "backbone": "resnet18", "cifar_stem": False, "epochs": 1, "batch_size": 8,
         "max_steps_per_epoch": 2, "num_workers": 0, "average_last_epochs": 1, "shuffle_buffer": 16, "accelerator": "cpu",
         "method_kwargs": {"proj_hidden_dim": 64, "proj_output_dim": 32}, "optimizer": {"name": "sgd", "lr": 0.1}}


def _write(path: Path, arms: dict) -> Path:
    study = {"name": "tiny", "seeds": [0, 1], "control": "hand", "plot": {"x": "gen_prob"},
             "eval": {"bank": "data/cifar10_train.npz", "test": "data/cifar10_test.npz", "limit_bank": 64,
                      "limit_test": 32, "val_bank": "data/cifar10_train.npz[0:64]",
                      "val_queries": "data/cifar10_train.npz[100:124]", "checkpoints": ["last", "avg"]},
             "shard_sets": {"t": {"generator": "taesd", "model": "models/taef2", "input": "data/cifar10_train.npz",
                                  "limit": 16, "views": 1, "resolution": 32, "shard_size": 8, "batch_size": 16,
                                  "device": "cpu"}},
             "train": TRAIN, "arms": arms}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study))
    return path


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _study(args):
    return CliRunner().invoke(main, ["study", *args])


@pytest.mark.slow
def test_tiny_study_runs_skips_resumes_records_failures_and_refuses_stale(tmp_path, monkeypatch, taef2_dir):
    monkeypatch.chdir(tmp_path)  # study paths are relative to the current folder, as from the repo root
    (tmp_path / "data").symlink_to(SHARED / "data")
    (tmp_path / "models").symlink_to(SHARED / "models")
    arms = {"hand": {"shards": "t", "gen_prob": 0}, "gen": {"shards": "t", "gen_prob": 0.5, "pairing": "orig+gen"}}  # K=1: one generated member at most
    path = _write(tmp_path / "studies" / "tiny" / "study.yaml", arms)
    folder = path.parent

    r = _study([str(path)])
    assert r.exit_code == 0, r.output
    results = {p.name: json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")}
    assert sorted(results) == ["gen-s0.json", "gen-s1.json", "hand-s0.json", "hand-s1.json"]
    for rec in results.values():
        assert 0 <= rec["knn_top1"] <= 100 and 0 <= rec["linear_top1"] <= 100
        assert rec["train"]["steps"] == 2 and rec["train"]["epochs"] == 1 and rec["train"]["seconds"] > 0
        assert rec["eval"]["n_bank"] == 64 and rec["eval"]["n_test"] == 32 and rec["synth"]["images"] == 16
        assert not [s for s in _strings(rec) if s.startswith("/") or str(tmp_path) in s]  # no local paths
        # both checkpoints on both splits; the validation queries are train images 100-123
        assert rec["scores"]["last"]["val"]["n_queries"] == 24 and rec["scores"]["last"]["val"]["n_bank"] == 64
        assert rec["scores"]["avg"]["test"]["n_queries"] == 32 and rec["scores"]["last"]["test"]["knn_top1"] == rec["knn_top1"]
        assert rec["scores"]["avg"]["ckpt_id"] != rec["scores"]["last"]["ckpt_id"]
        # the code that trained, per sitting, and its loader workers
        assert [c["num_workers"] for c in rec["train"]["code"]] == [0] and "commit" in rec["train"]["code"][0]
    assert (folder / "results.md").is_file() and (folder / "results.png").stat().st_size > 10_000
    table = (folder / "results.md").read_text()
    def primary(name):  # the decision's default metric: the mean of kNN and linear top-1 (test split)
        return (results[name]["knn_top1"] + results[name]["linear_top1"]) / 2

    d0, d1 = primary("gen-s0.json") - primary("hand-s0.json"), primary("gen-s1.json") - primary("hand-s1.json")
    assert f"s0 {d0:+.2f}, s1 {d1:+.2f}" in table
    assert "| checkpoint | split | paired Δ std |" in table and "| avg.ckpt | val |" in table
    # compute columns measured by gcl-train on each arm's recipe: the control is 1.00x itself
    assert next(ln for ln in table.splitlines() if ln.startswith("| hand |")).endswith(" | 1.00x |")
    # same seed = same data order: both arms of a seed read the same shard set, made once
    assert len(list((tmp_path / "out" / "studies" / "tiny" / "shards").iterdir())) == 1

    stamps = {p: p.stat().st_mtime_ns for p in (folder / "runs").glob("*.json")}
    r = _study([str(path)])
    assert r.exit_code == 0 and "nothing to run: all 4" in r.output, r.output
    assert {p: p.stat().st_mtime_ns for p in (folder / "runs").glob("*.json")} == stamps

    # killed after its last checkpoint, before gcl-train marked it finished: the next call resumes it
    run = tmp_path / "out" / "studies" / "tiny" / "runs" / "hand-s1"
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(info, status="running")))
    (folder / "runs" / "hand-s1.json").unlink()
    r = _study([str(path)])
    assert r.exit_code == 0 and "hand-s1: resume" in r.output, r.output
    sittings = json.loads((run / "study-run.json").read_text())["sittings"]
    assert [s["resume"] for s in sittings] == [False, True] and "--resume" in (run / "train.log").read_text()
    assert json.loads((folder / "runs" / "hand-s1.json").read_text())["train"]["sittings"] == 2

    # a training failure is recorded; the study goes on and exits non-zero at the end
    arms["broken"] = {"shards": "t", "gen_prob": 0.5, "pairing": "gen+gen"}  # K=1 cannot give gen+gen pairs
    _write(path, arms)
    r = _study([str(path), "--seeds", "0"])
    assert r.exit_code == 1 and "1 run(s) failed" in r.output, r.output
    failed = json.loads((folder / "runs" / "broken-s0.failed.json").read_text())
    assert failed["exit_code"] != 0 and "gen+gen" in failed["log_tail"] and str(tmp_path) not in json.dumps(failed)
    assert "Failed (see runs/*.failed.json): broken-s0" in (folder / "results.md").read_text()
    del arms["broken"]

    # an edited arm: its results are stale, refused until --rerun-stale replaces them
    arms["gen"] = {"shards": "t", "gen_prob": 0.6, "pairing": "orig+gen"}
    _write(path, arms)
    r = _study([str(path)])
    assert r.exit_code == 1 and "2 run(s) are stale" in r.output and "gen-s0, gen-s1" in r.output, r.output
    r = _study([str(path), "--rerun-stale", "--only", "gen", "--seeds", "0", "--max-runs", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads((folder / "runs" / "gen-s0.json").read_text())["train"]["gen_prob"] == 0.6
    text = (folder / "results.md").read_text()
    assert "Stale, left out (arm changed since they ran): gen-s1." in text and "| gen | 1 |" in text
