"""Shard sets kept in an object store are read by URL everywhere: gcl-synth verify and status,
gcl-train --shards / --shards-base, gcl-eval's data options; against moto's S3 server (conftest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcl.shardset import ShardSetError, open_shard_set

BUCKET = "gcl-sets"
PREFIX = f"s3://{BUCKET}/c10"


@pytest.fixture(scope="module")
def local_set(tmp_path_factory, cifar_test_npz, taef2_dir) -> Path:
    """A real gcl-synth output folder: 16 CIFAR images, K=1, 16 px, two shards of 8, labelled."""
    from gcl.synth.cli import main

    out = tmp_path_factory.mktemp("remote_sets") / "out"
    res = CliRunner().invoke(main, ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(cifar_test_npz),
                                    "--output", str(out), "--limit", "16", "--resolution", "16", "--views", "1",
                                    "--shard-size", "8", "--name", "c10"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def s3_set(s3_endpoint, local_set):
    """The output folder uploaded as it is to s3://gcl-sets/c10 (plan.json, stats, tars, manifest)."""
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    fs.put(str(local_set) + "/", PREFIX, recursive=True)
    assert sorted(Path(p).name for p in fs.ls(PREFIX)) == sorted(p.name for p in local_set.iterdir())
    return fs


def _invoke(main, args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line(res) -> str:
    assert "Traceback" not in res.output and (res.exception is None or isinstance(res.exception, SystemExit)), \
        repr(res.exception) + res.output[-1500:]
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def test_a_manifest_url_resolves_its_shards_against_its_own_folder(s3_set):
    by_manifest = open_shard_set(f"{PREFIX}/c10.manifest.json")
    assert by_manifest.urls == [f"{PREFIX}/c10-000000.tar", f"{PREFIX}/c10-000001.tar"]
    assert by_manifest.counts == [8, 8] and by_manifest.labelled and by_manifest.num_views == 1
    for folder in (PREFIX, PREFIX + "/"):  # a store folder holding one manifest reads through it
        assert open_shard_set(folder).urls == by_manifest.urls
    s3_set.rm(f"{PREFIX}/c10-000001.tar")
    with pytest.raises(ShardSetError, match=r"1 of 2 shard files missing \(first: s3://gcl-sets/c10/c10-000001.tar\)"):
        open_shard_set(PREFIX)
    with pytest.raises(ShardSetError, match="remote shards need their manifest"):
        open_shard_set(f"s3://{BUCKET}/nothing-here")
    with pytest.raises(ShardSetError, match="manifest not found: s3://gcl-sets/c10/other.manifest.json"):
        open_shard_set(f"{PREFIX}/other.manifest.json")


def test_verify_and_status_read_a_set_by_url(s3_set, local_set):
    from gcl.synth.cli import main

    for target in (f"{PREFIX}/c10.manifest.json", PREFIX):
        res = _invoke(main, ["verify", target])
        assert res.exit_code == 0 and "2/2 shards OK" in res.output, res.output
    res = _invoke(main, ["status", PREFIX])
    assert res.exit_code == 0, res.output
    assert res.output == _invoke(main, ["status", local_set]).output  # the same report as on disk
    assert "2/2 shards, 16 samples" in res.output
    assert _invoke(main, ["status", f"{PREFIX}/c10.manifest.json"]).output == res.output

    tar = (local_set / "c10-000001.tar").read_bytes()  # the same size, one byte changed
    s3_set.pipe(f"{PREFIX}/c10-000001.tar", tar[:-2000] + bytes([tar[-2000] ^ 1]) + tar[-1999:])
    res = _invoke(main, ["verify", PREFIX])
    assert res.exit_code == 1 and "BAD  s3://gcl-sets/c10/c10-000001.tar: sha256 mismatch" in res.output, res.output
    assert "1/2 shards OK" in res.output

    s3_set.rm(f"{PREFIX}/c10-000001.tar")
    res = _invoke(main, ["verify", PREFIX])
    assert res.exit_code == 1 and "BAD  s3://gcl-sets/c10/c10-000001.tar: missing" in res.output, res.output
    s3_set.rm(f"{PREFIX}/c10-000001.stats.json")
    res = _invoke(main, ["status", PREFIX])
    assert res.exit_code == 0 and "1/2 shards, 8 samples" in res.output and "pending      1: 1" in res.output
    assert "interrupted  0: -" in res.output
    s3_set.pipe(f"{PREFIX}/c10-000001.tar", tar)  # written, never committed by its stats file
    assert "interrupted  1: 1" in _invoke(main, ["status", PREFIX]).output
    res = _invoke(main, ["status", f"s3://{BUCKET}/elsewhere"])
    assert res.exit_code == 1 and "s3://gcl-sets/elsewhere has no plan.json" in _one_line(res)


def test_train_and_eval_on_a_set_by_url(s3_set, local_set, tmp_path):
    from gcl.eval.cli import main as eval_main
    from gcl.train.cli import main as train_main

    manifest = f"{PREFIX}/c10.manifest.json"
    res = _invoke(train_main, ["--shards", manifest, "--backbone", "resnet20", "--gen-prob", "0", "--epochs", 1,
                               "--batch-size", 4, "--num-workers", 0, "--accelerator", "cpu", "--no-progress",
                               "--output", tmp_path / "run"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest in json.dumps(run) and "testing-secret" not in json.dumps(run)

    # the manifest on disk, its shards read from the store (--shards-base); online evaluation by URL too
    shutil.copy(local_set / "c10.manifest.json", tmp_path / "copy.manifest.json")
    s3_set.copy(PREFIX, f"s3://{BUCKET}/queries", recursive=True)
    res = _invoke(train_main, ["--shards", tmp_path / "copy.manifest.json", "--shards-base", PREFIX, "--backbone",
                               "resnet20", "--gen-prob", "0", "--epochs", 1, "--batch-size", 4, "--num-workers", 0,
                               "--accelerator", "cpu", "--no-progress", "--max-steps-per-epoch", 1,
                               "--eval-train", PREFIX, "--eval-test", f"s3://{BUCKET}/queries", "--eval-limit", 8,
                               "--output", tmp_path / "run2"])
    assert res.exit_code == 0, res.output
    metrics = (tmp_path / "run2" / "metrics.csv").read_text()
    assert "test_knn_top1" in metrics.splitlines()[0]
    assert any(row.split(",")[metrics.splitlines()[0].split(",").index("test_knn_top1")]
               for row in metrics.splitlines()[1:])

    res = _invoke(eval_main, ["knn", "--ckpt", tmp_path / "run", "--eval-train", PREFIX, "--eval-test", manifest,
                              "--k", 3, "--no-progress", "--output", tmp_path / "eval"])
    assert res.exit_code == 0, res.output
    res = _invoke(eval_main, ["knn", "--raw-pixels", "--no-baselines", "--eval-train", PREFIX,
                              "--eval-test", f"s3://{BUCKET}/missing.manifest.json", "--k", 3,
                              "--output", tmp_path / "eval2"])
    assert res.exit_code != 0 and "s3://gcl-sets/missing.manifest.json" in _one_line(res)


def test_credentials_in_a_url_are_refused_and_json_reads_are_capped(s3_set):
    from gcl.manifest import ManifestError, read_json_file
    from gcl.shardlocations import check_typed_url

    for url in ("s3://key:secret@gcl-sets/c10/c10.manifest.json", f"{PREFIX}/c10.manifest.json?X-Amz-Signature=1",
                "s3://key:secret@gcl-sets/c10"):
        with pytest.raises(ShardSetError, match="take credentials from the store's environment"):
            open_shard_set(url)
    assert check_typed_url("hf://datasets/me/sets@main/c10") == "hf://datasets/me/sets@main/c10"  # a revision
    s3_set.pipe(f"s3://{BUCKET}/big.json", b"[" + b"0," * (1 << 19) + b"0]")  # just over 1 MiB
    with pytest.raises(ManifestError, match=r"plan s3://gcl-sets/big.json is over the 1 MiB cap"):
        read_json_file(f"s3://{BUCKET}/big.json", "plan", max_bytes=1 << 20)
    assert len(read_json_file(f"s3://{BUCKET}/big.json", "plan", max_bytes=2 << 20)) == (1 << 19) + 1


@pytest.mark.parametrize("manifest_url, base, expected", [
    ("s3://b/p/x.manifest.json", ".", "s3://b/p/"),
    ("s3://b/p/x.manifest.json", "sub", "s3://b/p/sub/"),
    ("s3://b/p/manifests/x.json", "../out/x", "s3://b/p/out/x/"),
    ("s3://b/x.manifest.json", ".", "s3://b/"),
    ("gs://b/a/b/x.manifest.json", "./", "gs://b/a/b/"),
    ("https://host:8000/sets/x.manifest.json", "shards", "https://host:8000/sets/shards/"),
    ("s3://b/p/x.manifest.json", "s3://other/q", "s3://other/q/"),  # a store URL in the manifest is kept
])
def test_a_relative_base_resolves_against_the_manifest_url(manifest_url, base, expected):
    from gcl.shardlocations import checked_base

    assert checked_base(base, manifest_url) == expected


@pytest.mark.parametrize("manifest_url, base", [
    ("s3://b/p/q/x.manifest.json", "../../y"),  # the one-'..' rule, as on disk
    ("s3://b/x.manifest.json", ".."),  # never above the bucket
    ("s3://b/p/x.manifest.json", "/etc"),
    ("s3://b/p/x.manifest.json", "pipe:cat"),
    ("s3://b/p/x.manifest.json", "simplecache::s3://b/p"),
])
def test_a_manifest_url_keeps_the_base_refusals(manifest_url, base):
    from gcl.shardlocations import checked_base

    with pytest.raises(ShardSetError, match="refusing base"):
        checked_base(base, manifest_url)


def test_training_checks_a_stored_set_once_and_again_when_an_object_changes(s3_set, local_set, tmp_path):
    from gcl.shardcheck import stamp_key
    from gcl.synth.cli import main as synth_main
    from gcl.train.cli import main as train_main

    args = ["--shards", PREFIX, "--backbone", "resnet20", "--gen-prob", "0", "--epochs", 1, "--batch-size", 4,
            "--num-workers", 0, "--accelerator", "cpu", "--no-progress", "--max-steps-per-epoch", 1]
    before = stamp_key(open_shard_set(PREFIX), True)
    assert _invoke(synth_main, ["verify", PREFIX]).exit_code == 0  # leaves the stamp training reuses
    tar = (local_set / "c10-000000.tar").read_bytes()
    s3_set.pipe(f"{PREFIX}/c10-000000.tar", tar[:-2000] + bytes([tar[-2000] ^ 1]) + tar[-1999:])
    assert stamp_key(open_shard_set(PREFIX), True) != before  # the object's new version: a new check
    res = _invoke(train_main, [*args, "--output", tmp_path / "run"])
    line = _one_line(res)
    assert "s3://gcl-sets/c10/c10-000000.tar: sha256 mismatch" in line and "--no-verify" in line
    res = _invoke(train_main, [*args, "--no-verify", "--output", tmp_path / "run2"])
    assert res.exit_code == 0, res.output


def test_a_missing_extra_or_an_unreachable_store_is_one_line(monkeypatch, tmp_path):
    import socket

    import fsspec

    from gcl.synth.cli import main

    def no_gcsfs(*_a, **_k):
        raise ImportError("Install gcsfs to access Google Storage")

    with monkeypatch.context() as patch:
        patch.setattr(fsspec.core, "url_to_fs", no_gcsfs)
        for spec in ("gs://bucket/set/x.manifest.json", "gs://bucket/set"):
            with pytest.raises(ShardSetError, match=r"gs:// URLs need an extra package: pip install 'gcl\[gcs\]'"):
                open_shard_set(spec)
    pytest.importorskip("s3fs")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
                        "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("gcl.streams.RETRY_BACKOFF_S", 0.01)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    for target in (PREFIX, f"{PREFIX}/c10.manifest.json"):
        line = _one_line(_invoke(main, ["verify", target]))
        assert target in line and "cannot connect" in line, line
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_manifest_served_over_http_reads_its_shards_beside_it(local_set):
    import functools
    import http.server
    import threading

    from gcl.synth.cli import main

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(local_set))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        shard_set = open_shard_set(f"{url}/c10.manifest.json")
        assert shard_set.urls == [f"{url}/c10-000000.tar", f"{url}/c10-000001.tar"] and shard_set.total == 16
        res = _invoke(main, ["verify", f"{url}/c10.manifest.json"])
        assert res.exit_code == 0 and "2/2 shards OK" in res.output, res.output
    finally:
        server.shutdown()
        server.server_close()
