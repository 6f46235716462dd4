"""Several machines, one set: two node processes fill one output without a shared lock, and
`gcl-synth finalize` writes the manifest only once every shard is committed."""

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from gcl.shards import read_shard
from gcl.synth.cli import main


def _node_args(cifar_test_npz, taef2_dir, out, rank):
    return ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(cifar_test_npz), "--limit", "24",
            "--resolution", "32", "--views", "1", "--shard-size", "6", "--output", str(out),
            "--node-rank", str(rank), "--num-nodes", "2"]


def test_two_nodes_fill_one_output_and_finalize(tmp_path, cifar_test_npz, taef2_dir):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-m", "gcl.synth.cli", *_node_args(cifar_test_npz, taef2_dir, out, r)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for r in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "gcl-synth finalize" in outputs[0] and not list(out.glob("*.manifest.json"))
    parts = {json.loads(p.read_text())["node_rank"]: json.loads(p.read_text()) for p in out.glob("*.node-*-of-2.json")}
    assert sorted(s["index"] for s in parts[0]["shards"]) == [0, 2]
    assert sorted(s["index"] for s in parts[1]["shards"]) == [1, 3]

    runner = CliRunner()
    res = runner.invoke(main, ["finalize", str(out)])
    assert res.exit_code == 0, res.output
    (mpath,) = out.glob("*.manifest.json")
    m = json.loads(mpath.read_text())
    assert m["complete"] and m["totals"]["samples"] == 24 and [s["index"] for s in m["shards"]] == [0, 1, 2, 3]
    assert m["throughput"]["generated_samples"] == 24 and m["nodes"] == 2
    sources = [json.loads(s["json"])["source"] for i in range(4) for s in read_shard(out / m["shards"][i]["url"])]
    assert sources == [f"cifar10_test/{i:07d}" for i in range(24)]  # every input once, in plan order
    assert runner.invoke(main, ["verify", str(mpath)]).exit_code == 0

    stats = sorted(out.glob("*-000003.stats.json"))[0]
    stats.unlink()  # node 1's last shard is no longer committed
    mpath.unlink()
    res = runner.invoke(main, ["finalize", str(out)])
    assert res.exit_code == 1 and "1 of 4 shards" in res.output and not list(out.glob("*.manifest.json"))
    res = runner.invoke(main, _node_args(cifar_test_npz, taef2_dir, out, 1))  # the node re-runs: redoes shard 3 only
    assert res.exit_code == 0, res.output
    assert runner.invoke(main, ["finalize", str(out)]).exit_code == 0
    again = json.loads(mpath.read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in m["shards"]]


def test_node_options_are_checked(tmp_path, cifar_test_npz, taef2_dir):
    runner = CliRunner()
    args = _node_args(cifar_test_npz, taef2_dir, tmp_path / "o", 0)
    res = runner.invoke(main, args[:-4] + ["--node-rank", "2", "--num-nodes", "2"])
    assert res.exit_code == 2 and "must be below --num-nodes 2" in res.output
    res = runner.invoke(main, args + ["--overwrite"])
    assert res.exit_code == 2 and "clear the output once" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(main, ["finalize", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "holds no plan.json" in res.output
