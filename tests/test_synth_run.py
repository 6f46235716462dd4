"""gcl-synth end to end on real CIFAR-10 images and the real TAEF2: shards, manifest, webdataset
read-back, determinism, resume after a kill, dask workers, verify, status, bad options."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gcl.synth.cli import main
from gcl.manifest import load_manifest
from gcl.shardset import open_shard_set
from gcl.io import sha256_file
from gcl.shards import read_shard

GCL_SYNTH = [sys.executable, "-m", "gcl.synth.cli"]


def synth(args, expect_ok=True):
    res = CliRunner().invoke(main, ["run", "--no-progress"] + [str(a) for a in args], catch_exceptions=False)
    if expect_ok:
        assert res.exit_code == 0, res.output
    return res


def manifest_of(out: Path) -> Path:
    (m,) = out.glob("*.manifest.json")
    return m


def shard_hashes(out: Path) -> dict:
    return {p.name: sha256_file(p) for p in sorted(out.glob("*.tar"))}


@pytest.mark.slow
def test_imagefolder_end_to_end_read_back_with_webdataset(tmp_path, cifar_folder, taef2_dir):
    import webdataset as wds

    out = tmp_path / "out"
    synth(["--model", taef2_dir, "--input", cifar_folder, "--output", out, "--views", 2, "--resolution", 64,
           "--shard-size", 128, "--batch-size", 32, "--manifest", tmp_path / "manifests" / "demo.json"])
    m = load_manifest(manifest_of(out))
    assert m["complete"] and m["totals"]["samples"] == 300 and [s["samples"] for s in m["shards"]] == [128, 128, 44]
    assert m["views"] == 2 and m["resolution"] == 64 and m["labelled"] and len(m["class_names"]) == 10
    assert m["generator"]["family"] == "taesd" and len(m["generator"]["weights_sha256"]) == 64
    ds = wds.WebDataset(open_shard_set(str(manifest_of(out))).urls, shardshuffle=False).decode("rgb8")
    keys, labels = [], []
    for s in ds:
        assert set(s) >= {"__key__", "orig.jpg", "view0.jpg", "view1.jpg", "cls", "json"}
        assert s["orig.jpg"].shape == s["view0.jpg"].shape == (64, 64, 3)
        meta = s["json"]
        assert [v["view"] for v in meta["views"]] == [0, 1]
        assert meta["views"][0]["ops"][0]["op"] == "noise" and 0.25 <= meta["views"][0]["ops"][0]["strength"] <= 0.75
        assert meta["class_name"] == m["class_names"][s["cls"]] and meta["source"].startswith(meta["class_name"] + "/")
        # views differ from the original yet keep its content (real pretrained decoder)
        o, v = s["orig.jpg"].astype(float), s["view0.jpg"].astype(float)
        psnr = 10 * np.log10(255**2 / ((o - v) ** 2).mean())
        assert 15 < psnr < 40
        keys.append(s["__key__"])
        labels.append(s["cls"])
    assert len(keys) == len(set(keys)) == 300
    assert sorted(set(labels)) == list(range(10))
    # the copy in manifests/ resolves the same shards from its own folder
    copy = tmp_path / "manifests" / "demo.json"
    assert open_shard_set(str(copy)).urls == open_shard_set(str(manifest_of(out))).urls


def test_same_seed_gives_identical_shard_bytes(tmp_path, cifar_test_npz, taef2_dir):
    common = ["--model", taef2_dir, "--input", cifar_test_npz, "--limit", 40, "--resolution", 32, "--shard-size", 20,
              "--batch-size", 8, "--recipe", "mask(ratio=0.1..0.3, p=0.5); noise(strength=0.3..0.6); mix(ratio=0.2)"]
    synth(common + ["--output", tmp_path / "a"])
    synth(common + ["--output", tmp_path / "b"])
    synth(common + ["--output", tmp_path / "c", "--seed", 1])
    a, b, c = shard_hashes(tmp_path / "a"), shard_hashes(tmp_path / "b"), shard_hashes(tmp_path / "c")
    assert len(a) == 2 and a == b
    assert a != c


def test_kill_and_resume_gives_the_uninterrupted_shard_set(tmp_path, cifar_test_npz, taef2_dir):
    args = ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(cifar_test_npz), "--limit", "60",
            "--resolution", "32", "--shard-size", "10", "--batch-size", "5"]
    ref = tmp_path / "ref"
    subprocess.run(GCL_SYNTH + args + ["--output", str(ref)], check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(GCL_SYNTH + args + ["--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.stats.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-shard: a .tmp tar is being written
    proc.wait()
    done_before = len(list(out.glob("*.stats.json")))
    assert 2 <= done_before < 6
    status = subprocess.run(GCL_SYNTH + ["status", str(out)], capture_output=True, text=True, check=True).stdout
    assert f"{done_before}/6 shards" in status
    subprocess.run(GCL_SYNTH + args + ["--output", str(out)], check=True, capture_output=True)
    assert not list(out.glob("*.tmp-*"))
    assert shard_hashes(out) == shard_hashes(ref)
    keys = [s["__key__"] for p in sorted(out.glob("*.tar")) for s in read_shard(p)]
    assert len(keys) == len(set(keys)) == 60


def test_dask_two_workers_cover_every_input(tmp_path, cifar_test_npz, taef2_dir):
    out = tmp_path / "dask"
    args = ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(cifar_test_npz), "--limit", "48",
            "--resolution", "32", "--shard-size", "12", "--batch-size", "12", "--processes", "2", "--output", str(out)]
    res = subprocess.run(GCL_SYNTH + args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    m = load_manifest(manifest_of(out))
    assert m["complete"] and len(m["shards"]) == 4 and m["totals"]["samples"] == 48
    keys = [s["__key__"] for p in sorted(out.glob("*.tar")) for s in read_shard(p)]
    assert len(set(keys)) == 48


def test_verify_names_flipped_byte_and_missing_shard(tmp_path, cifar_test_npz, taef2_dir):
    out = tmp_path / "v"
    synth(["--generator", "taef2", "--model", taef2_dir, "--input", cifar_test_npz, "--limit", 30, "--resolution", 32,
           "--shard-size", 10, "--output", out])  # taef2: the docs' name of the taesd family
    mpath = manifest_of(out)
    assert "_taesd_" in mpath.name
    runner = CliRunner()
    assert runner.invoke(main, ["verify", str(mpath)]).exit_code == 0
    res = runner.invoke(main, ["verify", str(out)])  # the output folder: read through its manifest
    assert res.exit_code == 0 and "3/3 shards OK" in res.output and "no manifest" not in res.output, res.output
    tars = sorted(out.glob("*.tar"))
    data = bytearray(tars[1].read_bytes())
    data[len(data) // 3] ^= 0x01
    tars[1].write_bytes(bytes(data))
    tars[2].unlink()
    res = runner.invoke(main, ["verify", str(mpath)])
    assert res.exit_code == 1
    assert f"{tars[1]}: sha256 mismatch" in res.output and f"{tars[2]}: missing" in res.output
    assert "1/3 shards OK" in res.output
    res = runner.invoke(main, ["verify", str(out)])
    assert res.exit_code == 1 and "1/3 shards OK" in res.output


def test_changed_options_refused_unless_overwrite(tmp_path, cifar_test_npz, taef2_dir):
    base = ["--model", taef2_dir, "--input", cifar_test_npz, "--limit", 10, "--resolution", 32, "--output",
            tmp_path / "o", "--name", "x"]
    synth(base)
    res = synth(base + ["--seed", 5], expect_ok=False)
    assert res.exit_code == 1 and "another plan (changed: seed)" in res.output and "--overwrite" in res.output
    synth(base + ["--seed", 5, "--overwrite"])
    assert json.loads((tmp_path / "o" / "plan.json").read_text())["options"]["seed"] == 5


@pytest.mark.parametrize("extra, msg", [
    (["--resolution", "60"], "multiple of the generator's downsampling"),
    (["--recipe", "blur(x=1)"], "unknown op"),
    (["--recipe", "tokens"], "has no codebook"),
    (["--dtype", "bfloat16", "--device", "cpu"], "slower than float32"),
    (["--input", "/nonexistent/dir"], "input not found"),
    (["--generator", "gan9000"], "unknown generator"),
])
def test_bad_options_are_one_line_errors(tmp_path, cifar_test_npz, taef2_dir, extra, msg):
    args = ["--model", str(taef2_dir), "--input", str(cifar_test_npz), "--output", str(tmp_path / "o"), "--limit", "4"]
    res = CliRunner().invoke(main, ["run"] + args + extra)
    assert res.exit_code != 0 and msg in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_vqgan_token_recipe_end_to_end(tmp_path, tiny_vqgan_dir, cifar_test_npz):
    out = tmp_path / "vq"
    synth(["--generator", "vqgan", "--model", tiny_vqgan_dir, "--input", cifar_test_npz, "--limit", 12,
           "--resolution", 32, "--recipe", "tokens", "--views", 3, "--output", out])
    samples = [s for p in sorted(out.glob("*.tar")) for s in read_shard(p)]
    assert len(samples) == 12
    meta = json.loads(samples[0]["json"])
    assert [o["op"] for o in meta["views"][0]["ops"]] == ["vq_replace", "vq_swap"]
    assert {"view0.jpg", "view1.jpg", "view2.jpg"} <= set(samples[0])


def test_scheduler_address_submits_to_existing_cluster(tmp_path, cifar_test_npz, taef2_dir):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        out = tmp_path / "sched"
        res = subprocess.run(GCL_SYNTH + ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(cifar_test_npz),
                                          "--limit", "16", "--resolution", "32", "--shard-size", "8",
                                          "--scheduler", cluster.scheduler_address, "--output", str(out)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    m = load_manifest(manifest_of(out))
    assert m["complete"] and m["totals"]["samples"] == 16


def test_rerun_keeps_view_stats_and_throughput(tmp_path, cifar_test_npz, taef2_dir):
    args = ["--model", taef2_dir, "--input", cifar_test_npz, "--limit", 8, "--resolution", 32, "--output", tmp_path / "o"]
    synth(args)
    mpath = manifest_of(tmp_path / "o")
    data = json.loads(mpath.read_text())
    data["view_stats"] = {"groups": [{"op": "noise", "psnr": 25.0}]}
    mpath.write_text(json.dumps(data))
    synth(args)  # everything committed: nothing regenerated
    again = json.loads(mpath.read_text())
    assert again["view_stats"] == data["view_stats"]
    assert again["throughput"] == data["throughput"] and again["throughput"]["generated_samples"] == 8
