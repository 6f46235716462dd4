"""Benchmark (not a test): bytes one epoch reads, per shard-set byte, at 1, 2 and 4 loader workers.

    .venv/bin/python bench/loader_reads.py [--images 4096] [--per-shard 256] [--batch-size 256]

Writes a CIFAR-10 shard set (bench/train_loader.py's fixture), serves it from a local http server
that counts the body bytes it sends, and runs one full epoch of gcl-train's loader
(gcl.train.data over gcl.data.ViewFamilies) and of the public ViewFamilies under a plain
DataLoader, at each worker count. Target: bytes read / set bytes <= 1.05 everywhere; gcl-train's
batches are also compared across worker counts (they must be identical). samples/s include worker
start-up; the same loader on the local files is printed beside them.

With moto installed (`pip install 'moto[server]' s3fs`), the same set is also put in a local
S3-compatible server (moto's, on 127.0.0.1) and gcl-train's loader reads it through s3fs:
local-disk against local-S3 samples/s, one epoch each, in one run.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from train_loader import write_fixture

from gcl.data import ViewFamilies
from gcl.train.config import load_config
from gcl.train.data import build_train_loader
from gcl.train.epochs import LoaderPosition


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        data = source.read()
        self.server.served += len(data)
        outputfile.write(data)

    def log_message(self, *args):
        pass


def serve(folder: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(CountingHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.served = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def train_epoch(manifest: Path, workers: int, batch_size: int) -> tuple[int, float, str]:
    """(samples, seconds, digest of the batches' keys) of one epoch of gcl-train's loader."""
    cfg = load_config("cifar10/simclr", {"shards": (str(manifest),), "batch_size": batch_size,
                                         "num_workers": workers, "verify": False})
    loader, _ = build_train_loader(cfg, world=1)
    loader.start_epoch(LoaderPosition(epoch=0))
    t, n, keys = time.perf_counter(), 0, hashlib.sha256()
    for batch in loader:
        n += len(batch["key"])
        keys.update("\n".join(batch["key"]).encode())
    return n, time.perf_counter() - t, keys.hexdigest()[:12]


def dataset_epoch(manifest: Path, workers: int, batch_size: int) -> tuple[int, float]:
    data = ViewFamilies(str(manifest), members=["orig", "gen?"], seed=0)
    t, n = time.perf_counter(), 0
    for views, _ in DataLoader(data, batch_size=batch_size, num_workers=workers):
        n += len(views[0])
    return n, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--per-shard", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        root.mkdir()
        manifest, _ = write_fixture(root, args.images, per_shard=args.per_shard)
        set_bytes = sum(p.stat().st_size for p in root.glob("*.tar"))
        server = serve(root)
        remote = Path(tmp) / "remote.manifest.json"
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        remote.write_text(json.dumps(dict(json.loads(manifest.read_text()), base=base)))
        print(f"shard set: {args.images} families in {len(list(root.glob('*.tar')))} shards, "
              f"{set_bytes / 1e6:.1f} MB, served over http from 127.0.0.1")
        print(f"{'reader':<34} {'workers':>7} {'read / set':>10} {'samples/s':>10} {'local samples/s':>15}  order")
        for nw in (int(w) for w in args.workers.split(",")):
            server.served = 0
            n, sec, digest = train_epoch(remote, nw, args.batch_size)
            ratio = server.served / set_bytes
            ln, lsec, ldigest = train_epoch(manifest, nw, args.batch_size)
            print(f"{'gcl-train loader (one epoch)':<34} {nw:>7} {ratio:>10.3f} {n / sec:>10.0f} {ln / lsec:>15.0f}  "
                  f"{digest}{'' if digest == ldigest else ' (differs from local!)'}")
            server.served = 0
            n, sec = dataset_epoch(remote, nw, args.batch_size)
            ratio = server.served / set_bytes
            ln, lsec = dataset_epoch(manifest, nw, args.batch_size)
            print(f"{'ViewFamilies + DataLoader':<34} {nw:>7} {ratio:>10.3f} {n / sec:>10.0f} {ln / lsec:>15.0f}")
        server.shutdown()
        s3_rows(root, manifest, args)
        print(f"torch threads: {torch.get_num_threads()}")


def s3_rows(root: Path, manifest: Path, args) -> None:
    """gcl-train's loader over the set in moto's S3 server, beside the same loader on local disk."""
    import os

    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("(moto[server] / s3fs not installed: no S3 rows)")
        return
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bench")
    for tar in sorted(root.glob("*.tar")):
        fs.put_file(str(tar), f"bench/set/{tar.name}")
    remote = root.parent / "s3.manifest.json"
    remote.write_text(json.dumps(dict(json.loads(manifest.read_text()), base="s3://bench/set/")))
    print(f"{'gcl-train loader (one epoch)':<34} {'workers':>7} {'s3 samples/s':>12} {'local samples/s':>15}  order")
    for nw in (int(w) for w in args.workers.split(",")):
        n, sec, digest = train_epoch(remote, nw, args.batch_size)
        ln, lsec, ldigest = train_epoch(manifest, nw, args.batch_size)
        print(f"{'  from moto S3 / local disk':<34} {nw:>7} {n / sec:>12.0f} {ln / lsec:>15.0f}  "
              f"{digest}{'' if digest == ldigest else ' (differs from local!)'}")
    server.stop()


if __name__ == "__main__":
    main()
