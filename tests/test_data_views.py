"""gcl.data.ViewFamilies and the loader on top: each shard read once per epoch whatever the worker
count, gcl-train's order independent of the worker count, the public Dataset's order and splits,
a shard set checked once, and remote reads that retry and say what is missing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import sys
import threading

import pytest
import torch
from torch.utils.data import DataLoader

from test_train_data import _cfg, make_shards

from gcl.data import ViewFamilies
from gcl.pairing import PairingError
from gcl.train.data import build_train_loader
from gcl.train.epochs import LoaderPosition


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        data = source.read()
        self.server.served += len(data)
        outputfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server(tmp_path):
    """A local http server over a fresh shard set; counts the body bytes it sends."""
    folder = tmp_path / "served"
    manifest = make_shards(folder, n=128, per_shard=16)  # 8 shards
    handler = functools.partial(_CountingHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.served = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    remote = tmp_path / "remote.manifest.json"
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    remote.write_text(json.dumps(dict(json.loads(manifest.read_text()), base=base)))
    set_bytes = sum(p.stat().st_size for p in folder.glob("*.tar"))
    yield server, remote, set_bytes
    server.shutdown()


def _digest(views) -> str:
    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in views)).hexdigest()


@pytest.mark.timeout(300)
def test_one_epoch_reads_each_shard_once_and_the_order_ignores_the_worker_count(counting_server):
    server, remote, set_bytes = counting_server
    orders = {}
    for nw in (1, 2, 4):
        loader, _ = build_train_loader(_cfg(shards=[str(remote)], num_workers=nw), world=1)
        loader.start_epoch(LoaderPosition(epoch=1))
        server.served = 0
        orders[nw] = [(k, _digest(v)) for b in loader for k, v in zip(b["key"], torch.stack(b["views"], 1))]
        ratio = server.served / set_bytes
        assert 0.99 <= ratio <= 1.05, f"{nw} workers read {ratio:.2f}x the shard set in one epoch"
    assert len(orders[1]) == 128 and len({k for k, _ in orders[1]}) == 128
    assert orders[1] == orders[2] == orders[4]  # same keys, same chosen members, same pixels

    server.served = 0  # the public Dataset under a plain DataLoader: shards dealt to workers, read once
    data = ViewFamilies(str(remote), members=["orig", "gen"], seed=3)
    items = list(DataLoader(data, batch_size=None, num_workers=2))
    assert len(items) == 128 and server.served / set_bytes <= 1.05


def test_view_families_items_order_splits_and_members(tmp_path):
    manifest = make_shards(tmp_path / "s", n=64, per_shard=16, views=2)

    def epoch(nw=2, **kw):
        data = ViewFamilies(str(manifest), **{"members": ["orig", "gen"], "seed": 1, "shuffle_buffer": 20, **kw})
        return [(_digest(views), int(label)) for views, label in DataLoader(data, batch_size=None, num_workers=nw)]

    first, again = epoch(), epoch()
    assert first == again and len(first) == 64  # same seed and worker count: same order, every family once
    assert len({d for d, _ in first}) == 64 and all(0 <= lab < 10 for _, lab in first)
    other = ViewFamilies(str(manifest), members=["orig", "gen"], seed=1, shuffle_buffer=20)
    other.set_epoch(1)
    later = [(_digest(v), int(lab)) for v, lab in DataLoader(other, batch_size=None, num_workers=2)]
    assert later != first and sorted(lab for _, lab in later) == sorted(lab for _, lab in first)
    halves = [epoch(nw=0, rank=r, world=2) for r in (0, 1)]  # DDP ranks: disjoint shares of the families
    assert len(halves[0]) == len(halves[1]) == 32
    assert sorted(lab for h in halves for _, lab in h) == sorted(lab for _, lab in first)

    views, label = next(iter(ViewFamilies(str(manifest), members=["orig", "orig", "gen", "gen"], seed=0)))
    assert [v.dtype for v in views] == [torch.uint8] * 4 and views[0].shape == (3, 32, 32)
    assert torch.equal(views[0], views[1])  # both originals
    assert not torch.equal(views[2], views[3]) and not torch.equal(views[0], views[2])  # distinct generated views
    gen = [ViewFamilies(str(manifest), members=["gen?"], gen_prob=p, seed=0, shuffle=False) for p in (0.0, 1.0)]
    orig_only, gen_only = ([v[0] for v, _ in g] for g in gen)
    assert all(not torch.equal(a, b) for a, b in zip(orig_only, gen_only))  # gen_prob 0: orig; 1: a view

    sized = ViewFamilies(str(manifest), transform=lambda img: img.size, size=24, seed=0)
    assert next(iter(sized))[0] == [(24, 24), (24, 24)]  # transform sees PIL images at `size`
    with pytest.raises(PairingError, match="only 2"):
        ViewFamilies(str(manifest), members=["gen", "gen", "gen"])


def test_a_shard_set_is_checked_once_and_a_changed_shard_or_manifest_is_checked_again(tmp_path, monkeypatch):
    import gcl.shardcheck as shardcheck

    monkeypatch.setenv("GCL_CACHE_DIR", str(tmp_path / "cache"))
    manifest = make_shards(tmp_path / "s", n=48, per_shard=16)
    checked = []
    real = shardcheck.check_shard
    monkeypatch.setattr(shardcheck, "check_shard", lambda url, *a, **k: checked.append(url) or real(url, *a, **k))
    from gcl.shardset import open_shard_set

    ranks = [threading.Thread(target=shardcheck.verify_once, args=(open_shard_set(str(manifest)),)) for _ in range(4)]
    for t in ranks:  # four ranks start together: one checks, the others wait and reuse its stamp
        t.start()
    for t in ranks:
        t.join()
    assert len(checked) == 3
    shardcheck.verify_once(open_shard_set(str(manifest)))
    assert len(checked) == 3  # the next run reuses the stamp

    tar = tmp_path / "s" / "fix-000001.tar"
    data = bytearray(tar.read_bytes())
    data[2000] ^= 1
    tar.write_bytes(bytes(data))
    with pytest.raises(shardcheck.ShardSetError, match="sha256 mismatch"):
        shardcheck.verify_once(open_shard_set(str(manifest)))
    with pytest.raises(shardcheck.ShardSetError, match="sha256 mismatch"):  # a failed check leaves no stamp
        shardcheck.verify_once(open_shard_set(str(manifest)))
    data[2000] ^= 1
    tar.write_bytes(bytes(data))
    m = json.loads(manifest.read_text())
    m["class_names"][0] = "zero"
    manifest.write_text(json.dumps(m))
    before = len(checked)
    shardcheck.verify_once(open_shard_set(str(manifest)))
    assert len(checked) == before + 3  # other manifest bytes: checked again

    from click.testing import CliRunner

    from gcl.synth.cli import main as synth

    other = make_shards(tmp_path / "t", n=16, per_shard=16, name="t")
    result = CliRunner().invoke(synth, ["verify", str(other)])
    assert result.exit_code == 0 and "1/1 shards OK" in result.output, result.output
    before = len(checked)
    shardcheck.verify_once(open_shard_set(str(other)))
    assert len(checked) == before  # gcl-synth verify's pass is reused by training


def test_remote_reads_retry_and_a_missing_extra_is_one_line(tmp_path, monkeypatch):
    import gcl.streams as streams

    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "a.tar").write_bytes(b"x" * 5000)
    failures = {"left": 2}

    class Flaky(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if failures["left"]:
                failures["left"] -= 1
                self.send_error(503, "busy")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Flaky, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(streams, "RETRY_BACKOFF_S", 0.01)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with streams.open_stream(url + "a.tar") as fh:  # two 503 answers, then the file
            assert fh.read() == b"x" * 5000
        with pytest.raises(streams.StreamError, match="HTTP 404"):
            streams.open_stream(url + "missing.tar")  # not retried: a missing object stays missing
    finally:
        server.shutdown()
    _without_s3fs(monkeypatch)
    with pytest.raises(streams.StreamError, match=r"s3://b/x.tar: .*pip install 'gcl\[s3\]'"):
        streams.open_stream("s3://b/x.tar")


def test_store_bases_in_manifests_and_a_missing_extra_before_training(tmp_path, monkeypatch):
    from gcl.train.data import DataError

    manifest = make_shards(tmp_path / "s", n=16, per_shard=16)
    data = json.loads(manifest.read_text())
    chained = tmp_path / "chained.manifest.json"
    chained.write_text(json.dumps(dict(data, base="s3://bucket/c10::file:///etc/")))
    with pytest.raises(DataError, match="refusing base"):  # an fsspec chain is not a store URL
        build_train_loader(_cfg(shards=[str(chained)]), world=1)
    in_s3 = tmp_path / "s3.manifest.json"
    in_s3.write_text(json.dumps(dict(data, base="s3://bucket/c10")))
    _without_s3fs(monkeypatch)
    with pytest.raises(DataError, match=r"s3://bucket/c10/fix-000000.tar: .*pip install 'gcl\[s3\]'"):
        build_train_loader(_cfg(shards=[str(in_s3)], batch_size=4), world=1)


def test_a_read_cut_mid_stream_is_resumed_by_a_retry(tmp_path, monkeypatch):
    import gcl.streams as streams

    body = bytes(range(256)) * 400  # 100 KiB
    cuts = {"left": 1}

    class Cutting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if cuts["left"]:
                cuts["left"] -= 1
                self.wfile.write(body[:30000])  # then the connection drops
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cutting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(streams, "RETRY_BACKOFF_S", 0.01)
    try:
        with streams.open_stream(f"http://127.0.0.1:{server.server_address[1]}/a.tar") as fh:
            got = b"".join(iter(lambda: fh.read(8192), b""))
    finally:
        server.shutdown()
    assert got == body and cuts["left"] == 0


def _without_s3fs(monkeypatch):
    """As if the s3 extra were not installed, whatever ran before: fsspec caches a filesystem class
    once any test has opened s3:// (the moto tests), so the cache entry goes too."""
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)

