"""Shard -> view-pair loader: counts, pairing from real shards, errors, plain-input path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gcl.manifest import write_manifest
from gcl.shards import Sample, ShardWriter, encode_image, shard_name

os.environ["HF_HUB_OFFLINE"] = "1"
CIFAR_TEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_test.npz"


def make_shards(folder: Path, n: int = 96, per_shard: int = 24, views: int = 2, res: int = 32, labelled: bool = True,
                name: str = "fix", corrupt: int = 0) -> Path:
    """Real CIFAR images as orig; generated views = the image plus seeded pixel noise (a stand-in
    generator with the exact shard layout gcl-synth writes). Returns the manifest path."""
    with np.load(CIFAR_TEST) as z:
        images, labels = z["images"][:n], z["labels"][:n]
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    rng = np.random.default_rng(0)
    for s in range(0, n, per_shard):
        path = folder / shard_name(name, s // per_shard)
        w = ShardWriter(path)
        for i in range(s, min(n, s + per_shard)):
            img = images[i]
            imgs = {"orig": encode_image(img, "jpg", 95)}
            for v in range(views):
                noisy = np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
                imgs[f"view{v}"] = encode_image(noisy, "jpg", 95)
            if i < corrupt:
                imgs["orig"] = b"not a jpeg"
            meta = {"views": [{"view": v, "seed": v, "ops": [{"op": "noise", "strength": 0.1}]} for v in range(views)]}
            w.write(Sample(f"img{i:05d}", imgs, meta, int(labels[i]) if labelled else None))
        size, sha = w.close()
        shards.append({"url": path.name, "samples": w.count, "bytes": size, "sha256": sha})
    manifest = {"shards": shards, "views": views, "resolution": res, "image_format": "jpg",
                "class_names": [str(i) for i in range(10)] if labelled else None, "labelled": labelled}
    return write_manifest(manifest, folder / f"{name}.manifest.json", folder)


from gcl.train.config import AugConfig, TrainConfig  # noqa: E402
from gcl.train.data import DataError, build_train_loader  # noqa: E402
from gcl.train.epochs import LoaderPosition  # noqa: E402


def _cfg(**kw):
    base = dict(augmentations=[AugConfig(crop_size=16)], batch_size=8, num_workers=2, shuffle_buffer=50, gen_prob=0.5)
    base.update(kw)
    return TrainConfig(**base)


def _epoch_keys(loader, epoch):
    loader.start_epoch(LoaderPosition(epoch=epoch))  # what train/run.py's LoaderDriver does each epoch
    keys = []
    for b in loader:
        # members arrive decoded at the shard resolution (32 px), not yet augmented to the 16 px crop
        assert len(b["views"]) == 2 and b["views"][0].shape == (8, 3, 32, 32) and b["views"][0].dtype == torch.uint8
        assert b["generated"].shape == (8, 2) and b["generated"].dtype == torch.bool
        keys += b["key"]
    return keys


def test_every_sample_once_per_epoch_and_order_depends_on_epoch(tmp_path):
    m = make_shards(tmp_path / "s", n=96, per_shard=24)
    loader, source = build_train_loader(_cfg(shards=[str(m)]), world=1)
    assert source.total == 96 and source.num_views == 2 and loader.steps == 12
    e0, e0b, e1 = _epoch_keys(loader, 0), _epoch_keys(loader, 0), _epoch_keys(loader, 1)
    assert sorted(e0) == sorted(f"img{i:05d}" for i in range(96)) and len(set(e0)) == 96
    assert e0 == e0b  # same seed + epoch: same order (what --resume relies on)
    assert e0 != e1 and sorted(e0) == sorted(e1)


def test_brace_pattern_list_and_corrupt_samples_counted(tmp_path):
    make_shards(tmp_path / "s", n=48, per_shard=24, corrupt=3)
    pattern = str(tmp_path / "s" / "fix-{000000..000001}.tar")
    loader, source = build_train_loader(_cfg(shards=[pattern], gen_prob=0.0, batch_size=5), world=1)
    assert source.total == 48 and source.num_views == 2
    keys = _epoch_keys_any(loader)
    assert loader.skipped == 3 and len(keys) == 45 and not {f"img{i:05d}" for i in range(3)} & set(keys)


def _epoch_keys_any(loader):
    loader.start_epoch(LoaderPosition())
    return [k for b in loader for k in b["key"]]


def test_bad_inputs_are_one_line_errors(tmp_path):
    m = make_shards(tmp_path / "s", n=24, per_shard=24, views=0)
    with pytest.raises(DataError, match="K=0"):
        build_train_loader(_cfg(shards=[str(m)], gen_prob=0.5), world=1)
    build_train_loader(_cfg(shards=[str(m)], gen_prob=0.0), world=1)  # baseline on K=0 shards works
    with pytest.raises(DataError, match="no shards found"):
        build_train_loader(_cfg(shards=[str(tmp_path / "nope-{000000..000001}.tar")]), world=1)
    m2 = make_shards(tmp_path / "t", n=24, per_shard=24, name="t")
    with open(tmp_path / "t" / "t-000000.tar", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"XXXX")
    with pytest.raises(DataError, match="sha256 mismatch.*1 of 1 shards fail"):
        build_train_loader(_cfg(shards=[str(m2)]), world=1)  # checked by default
    build_train_loader(_cfg(shards=[str(m2)], verify=False), world=1)  # --no-verify trains anyway
    (tmp_path / "t" / "t-000000.tar").unlink()
    with pytest.raises(DataError, match="shard files missing"):
        build_train_loader(_cfg(shards=[str(m2)]), world=1)
    with pytest.raises(DataError, match="fewer than one batch"):
        build_train_loader(_cfg(shards=[str(m)], gen_prob=0.0, batch_size=64), world=1)
    with pytest.raises(DataError, match="more members"):
        m3 = make_shards(tmp_path / "u", n=24, per_shard=24, views=1, name="u")
        build_train_loader(_cfg(shards=[str(m3)], method="supcon", family_views=3, gen_prob=0.5), world=1)


def test_plain_npz_input(tmp_path):
    with np.load(CIFAR_TEST) as z:
        np.savez(tmp_path / "small.npz", images=z["images"][:40], labels=z["labels"][:40])
    loader, source = build_train_loader(_cfg(input=str(tmp_path / "small.npz"), gen_prob=0.0), world=1)
    keys = _epoch_keys(loader, 0)
    assert len(keys) == 40 and len(set(keys)) == 40


def test_pipe_only_when_typed_and_moved_shards(tmp_path):
    """A manifest is data: its pipe: base is refused and its command never runs. The same stream
    typed by the user (--shards-base pipe:...) works, and a moved shard folder needs no rewrite."""
    m = make_shards(tmp_path / "s", n=48, per_shard=24)
    data = json.loads(Path(m).read_text())
    witness = tmp_path / "pwned"
    data["base"] = f"pipe:touch {witness}; cat {tmp_path / 's'}"
    piped = tmp_path / "piped.manifest.json"
    piped.write_text(json.dumps(data))
    with pytest.raises(DataError, match="manifests are data, never commands"):
        build_train_loader(_cfg(shards=[str(piped)], batch_size=8), world=1)
    data["base"], data["shards"][0]["url"] = "s", f"pipe:touch {witness}; cat s/fix-000000.tar"
    piped.write_text(json.dumps(data))
    with pytest.raises(DataError, match="refusing shard url"):
        build_train_loader(_cfg(shards=[str(piped)], batch_size=8), world=1)
    assert not witness.exists()
    loader, source = build_train_loader(_cfg(shards=[m], shards_base=f"pipe:cat {tmp_path / 's'}", batch_size=8), world=1)
    assert source.units[0].startswith("pipe:cat ")
    assert sorted(_epoch_keys_any(loader)) == sorted(f"img{i:05d}" for i in range(48))
    moved = tmp_path / "moved"
    (tmp_path / "s").rename(moved)
    loader, _ = build_train_loader(_cfg(shards=[str(moved / "fix.manifest.json")], batch_size=8), world=1)
    assert len(set(_epoch_keys_any(loader))) == 48


def test_mid_epoch_resume_skips_the_batches_already_trained(tmp_path):
    """LoaderDriver turns the restored optimizer step count into the batches already trained in the
    epoch, once, at the start of training; the loader then yields exactly the rest of that epoch.
    (That the count is right inside a real killed run: tests/test_train_exact.py.)"""
    from types import SimpleNamespace

    from gcl.train.run import LoaderDriver

    m = make_shards(tmp_path / "s", n=96, per_shard=24)
    loader, _ = build_train_loader(_cfg(shards=[str(m)]), world=1)
    full = [b["key"] for b in (loader.start_epoch(LoaderPosition(epoch=1)), loader)[1]]
    trainer = SimpleNamespace(current_epoch=1, global_rank=0, world_size=1, global_step=loader.steps + 5)
    LoaderDriver(loader).on_train_start(trainer, None)
    assert [b["key"] for b in loader] == full[5:]
    LoaderDriver(loader).on_train_epoch_start(trainer, None)  # a new epoch starts from its first batch
    assert [b["key"] for b in loader] == full
