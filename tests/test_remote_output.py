"""gcl-synth run --output s3://...: the same guarantees as a local folder, on moto's S3 server
(a shard is visible once its tar and stats are there, a killed run resumes, a rerun skips what is
committed, the manifest names shards relative to itself, no credentials in anything written)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcl.synth.cli import main
from gcl.synth.remote_output import check_output_url, committed_indices, RemoteOutputError

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "gcl-out"


@pytest.fixture
def s3(s3_endpoint, tmp_path, monkeypatch):
    import s3fs

    monkeypatch.setenv("GCL_CACHE_DIR", str(tmp_path / "cache"))
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    return fs


def _args(inp, out, taef2_dir, *extra):
    return ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(inp), "--output", out,
            "--resolution", "32", "--views", "1", "--shard-size", "2", "--limit", "8", *map(str, extra)]


def _run(inp, out, taef2_dir, *extra):
    return CliRunner().invoke(main, _args(inp, out, taef2_dir, *extra))


def _remote_json(fs, key) -> dict:
    return json.loads(fs.cat_file(f"{BUCKET}/{key}"))


def test_a_run_to_s3_publishes_shards_then_manifest_and_a_rerun_skips_them(s3, tmp_path, cifar_test_npz, taef2_dir,
                                                                           s3_endpoint):
    url = f"s3://{BUCKET}/sets/c10"
    res = _run(cifar_test_npz, url, taef2_dir, "--name", "c10", "--manifest", tmp_path / "manifests" / "c10.json")
    assert res.exit_code == 0, res.output
    assert f"manifest: {url}/c10.manifest.json" in res.output
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/sets/c10", refresh=True)}
    assert committed_indices(names, "c10") == {0, 1, 2, 3} and {"plan.json", "c10.manifest.json"} <= names
    manifest = _remote_json(s3, "sets/c10/c10.manifest.json")
    assert manifest["base"] == "." and manifest["complete"] and manifest["totals"]["samples"] == 8
    for entry in manifest["shards"]:  # the tars at the URL are the ones the stats and manifest describe
        data = s3.cat_file(f"{BUCKET}/sets/c10/{entry['url']}")
        import hashlib

        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == _remote_json(
            s3, f"sets/c10/{entry['url'][:-4]}.stats.json")["sha256"]
    copy = json.loads((tmp_path / "manifests" / "c10.json").read_text())
    assert copy["base"] == f"{url}/"
    written = json.dumps(manifest) + json.dumps(copy) + s3.cat_file(f"{BUCKET}/sets/c10/plan.json").decode()
    assert "testing-secret" not in written and s3_endpoint not in written and str(tmp_path) not in written
    assert not list((tmp_path / "cache").rglob("*.tar"))  # staging keeps records, never the set
    before = {e["url"]: s3.info(f"{BUCKET}/sets/c10/{e['url']}")["LastModified"] for e in manifest["shards"]}
    again = _run(cifar_test_npz, url, taef2_dir, "--name", "c10")
    assert again.exit_code == 0 and "nothing left: all 4 shards already committed in " + url in again.output
    assert before == {u: s3.info(f"{BUCKET}/sets/c10/{u}")["LastModified"] for u in before}


def test_a_killed_run_resumes_from_what_the_url_holds(s3, tmp_path, cifar_test_npz, taef2_dir):
    url = f"s3://{BUCKET}/killed"
    cmd = [sys.executable, "-m", "gcl.synth.cli", *_args(cifar_test_npz, url, taef2_dir, "--name", "k")]
    cmd[cmd.index("--limit") + 1] = "36"  # 36 shards of one image: caught in the middle even on a fast CPU
    cmd[cmd.index("--shard-size") + 1] = "1"
    log = tmp_path / "killed.log"
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    done: set[int] = set()
    while time.monotonic() < deadline and len(done) < 2 and proc.poll() is None:
        time.sleep(0.05)
        try:  # the prefix exists once the write check's probe is up, and may vanish when it goes
            done = committed_indices({p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/killed", refresh=True)}, "k")
        except FileNotFoundError:
            continue
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(done) < 36, f"the run was not caught in the middle ({len(done)} shards): {log.read_text()[-2000:]}"
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/killed", refresh=True)}
    assert "k.manifest.json" not in names  # no manifest for an unfinished set
    kept = committed_indices(names, "k")
    stamps = {i: s3.info(f"{BUCKET}/killed/k-{i:06d}.tar")["LastModified"] for i in kept}
    res = CliRunner().invoke(main, cmd[3:])
    assert res.exit_code == 0, res.output
    assert f"resuming: {len(kept)} of 36 shards already committed" in res.output
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/killed", refresh=True)}
    assert committed_indices(names, "k") == set(range(36)) and "k.manifest.json" in names
    assert stamps == {i: s3.info(f"{BUCKET}/killed/k-{i:06d}.tar")["LastModified"] for i in kept}  # not remade
    assert _remote_json(s3, "killed/k.manifest.json")["totals"]["samples"] == 36


def test_a_tampered_remote_shard_is_made_again_and_overwrite_replaces_the_set(s3, cifar_test_npz, taef2_dir):
    url = f"s3://{BUCKET}/t"
    assert _run(cifar_test_npz, url, taef2_dir, "--name", "t").exit_code == 0
    good = s3.cat_file(f"{BUCKET}/t/t-000001.tar")
    s3.pipe_file(f"{BUCKET}/t/t-000001.tar", good[:2000] + bytes(1000) + good[3000:])  # same size, other bytes
    res = _run(cifar_test_npz, url, taef2_dir, "--name", "t")
    assert res.exit_code == 0 and "shard 1 is made again" in res.output, res.output
    assert s3.cat_file(f"{BUCKET}/t/t-000001.tar") == good  # same seed, same device: the same bytes
    res = _run(cifar_test_npz, url, taef2_dir, "--name", "t", "--seed", "1")
    assert res.exit_code == 1 and "holds shards of another plan" in res.output and "Traceback" not in res.output
    res = _run(cifar_test_npz, url, taef2_dir, "--name", "t2", "--seed", "1", "--overwrite")
    assert res.exit_code == 0, res.output
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/t", refresh=True)}
    assert not any(n.startswith("t-") or n.startswith("t.") for n in names)  # the old plan's files are gone
    assert committed_indices(names, "t2") == {0, 1, 2, 3}


def test_nodes_fill_one_url_and_finalize_writes_its_manifest(s3, cifar_test_npz, taef2_dir):
    url = f"s3://{BUCKET}/nodes"
    for rank in (0, 1):
        res = _run(cifar_test_npz, url, taef2_dir, "--name", "n", "--node-rank", rank, "--num-nodes", 2)
        assert res.exit_code == 0, res.output
        assert f"gcl-synth finalize {url}" in res.output
    res = CliRunner().invoke(main, ["finalize", url])
    assert res.exit_code == 0 and f"manifest: {url}/n.manifest.json" in res.output, res.output
    manifest = _remote_json(s3, "nodes/n.manifest.json")
    assert [s["index"] for s in manifest["shards"]] == [0, 1, 2, 3] and manifest["nodes"] == 2
    res = CliRunner().invoke(main, ["finalize", f"s3://{BUCKET}/empty"])
    assert res.exit_code == 1 and "holds no plan.json" in res.output


def test_merge_writes_its_set_to_a_url(s3, tmp_path, cifar_test_npz, taef2_dir):
    for seed in (0, 1):
        res = _run(cifar_test_npz, str(tmp_path / f"s{seed}"), taef2_dir, "--name", f"s{seed}", "--seed", seed)
        assert res.exit_code == 0, res.output
    url = f"s3://{BUCKET}/merged"
    res = CliRunner().invoke(main, ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--output", url, "--name", "m"])
    assert res.exit_code == 0 and f"manifest: {url}/m.manifest.json" in res.output, res.output
    manifest = _remote_json(s3, "merged/m.manifest.json")
    assert manifest["views"] == 2 and len(manifest["merged_from"]) == 2 and manifest["base"] == "."
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/merged", refresh=True)}
    assert committed_indices(names, "m") == {0, 1, 2, 3}
    import hashlib

    assert all(hashlib.sha256(s3.cat_file(f"{BUCKET}/merged/{e['url']}")).hexdigest() == e["sha256"]
               for e in manifest["shards"])
    assert not list((tmp_path / "cache").rglob("*.tar"))


def test_s3_end_to_end_input_output_kill_resume_verify_train_evaluate(s3, tmp_path, taef2_dir):
    """The whole path on one S3 server: WebDataset input in a bucket -> gcl-synth run to the
    bucket, killed with SIGKILL in the middle and resumed -> verify -> one epoch of gcl-train ->
    a kNN score, every step reading the set by URL."""
    from test_synth_webdataset_inputs import write_wds

    from gcl.eval.cli import main as eval_main
    from gcl.train.cli import main as train_main

    for path in write_wds(tmp_path / "wds", shards=4, per_shard=6):
        s3.put_file(str(path), f"{BUCKET}/in/{path.name}")
    out = f"s3://{BUCKET}/e2e"
    args = _args("s3://gcl-out/in/part-{000000..000003}.tar", out, taef2_dir, "--name", "e2e")
    args[args.index("--limit") + 1] = "24"  # all of them, one shard each: caught in the middle even on a fast CPU
    args[args.index("--shard-size") + 1] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "gcl.synth.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    done, deadline = set(), time.monotonic() + 240
    while time.monotonic() < deadline and len(done) < 3 and proc.poll() is None:
        time.sleep(0.05)
        try:
            done = committed_indices({p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/e2e", refresh=True)}, "e2e")
        except FileNotFoundError:
            continue
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= len(done) < 24
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "resuming:" in res.output, res.output
    manifest_url = f"{out}/e2e.manifest.json"
    res = CliRunner().invoke(main, ["verify", out])  # the folder URL, read through its one manifest
    assert res.exit_code == 0 and "24/24 shards OK" in res.output, res.output
    res = CliRunner().invoke(train_main, ["--shards", manifest_url, "--backbone", "resnet20", "--batch-size", "8", "--pairing", "orig+gen",
                                          "--epochs", "1", "--num-workers", "1", "--output", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    res = CliRunner().invoke(eval_main, ["knn", "--ckpt", str(tmp_path / "run"), "--eval-train", manifest_url,
                                         "--eval-test", manifest_url, "--output", str(tmp_path / "knn")])
    assert res.exit_code == 0 and "top-1" in res.output, res.output
    record = json.loads(next((tmp_path / "knn").glob("knn-*.json")).read_text())
    assert record["n_test"] == 24 and "testing-secret" not in json.dumps(record)


@pytest.mark.parametrize("url, says", [
    ("https://example.org/sets", "writes to local folders and to s3://"),
    ("s3://key:secret@bucket/p", "credentials"),
    ("s3://bucket/p?X-Amz-Signature=abc", "credentials"),
])
def test_output_urls_gcl_cannot_write_safely_are_one_line(url, says):
    with pytest.raises(RemoteOutputError, match=says):
        check_output_url(url)


def test_a_missing_bucket_is_one_line_before_any_work(s3, cifar_test_npz, taef2_dir):
    res = _run(cifar_test_npz, "s3://no-such-bucket/x", taef2_dir)
    assert res.exit_code == 1 and "Traceback" not in res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: s3://no-such-bucket/x/.gcl-synth-write-check-") and "write check failed" in last



def test_contact_sheets_and_view_stats_read_a_set_by_url(s3, tmp_path, cifar_test_npz, taef2_dir):
    from gcl.eval.cli import main as eval_main

    url = f"s3://{BUCKET}/pics"
    assert _run(cifar_test_npz, url, taef2_dir, "--name", "p").exit_code == 0
    res = CliRunner().invoke(eval_main, ["inspect", url, "--rows", "3"])  # nowhere local to put the picture
    assert res.exit_code == 2 and "pass --output FOLDER" in res.output
    res = CliRunner().invoke(eval_main, ["inspect", url, "--rows", "3", "--output", str(tmp_path / "pics")])
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(tmp_path / "pics" / "sheet.png").size[1] > 0
    res = CliRunner().invoke(eval_main, ["viewstats", url, "--samples", "4"])
    assert res.exit_code == 2 and "pass --no-store" in res.output
    res = CliRunner().invoke(eval_main, ["viewstats", url, "--samples", "4", "--no-store"])
    assert res.exit_code == 0 and "PSNR" in res.output, res.output
    assert "view_stats" not in _remote_json(s3, "pics/p.manifest.json")


@pytest.mark.slow
def test_dask_workers_publish_their_shards_to_the_url(s3, cifar_test_npz, taef2_dir):
    url = f"s3://{BUCKET}/dask"
    res = _run(cifar_test_npz, url, taef2_dir, "--name", "d", "--processes", 2)  # each worker opens the store itself
    assert res.exit_code == 0 and "4/4 committed" in res.output, res.output
    names = {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/dask", refresh=True)}
    assert committed_indices(names, "d") == {0, 1, 2, 3} and "d.manifest.json" in names
