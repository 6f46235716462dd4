"""Reader: every image mode becomes RGB; a zoo of broken files is counted and skipped; the
error-rate guard; the default-model download path with its checksum (via file:// URLs)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gcl.synth.cli import main
from gcl.inputs import list_inputs, load_image_file, resize_center_crop
from gcl.shards import read_shard


def _modes_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    d = root / "good"
    d.mkdir(parents=True)
    Image.fromarray(rgb).save(d / "rgb.JPG")
    Image.fromarray(rgb).convert("L").save(d / "gray.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpeg")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "alpha.webp")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(d / "sixteen.png")
    Image.fromarray(rgb).save(d / "bitmap.bmp")
    return root


def test_every_mode_becomes_rgb(tmp_path):
    root = _modes_folder(tmp_path)
    inputs = list_inputs(root)
    assert inputs.kind == "imagefolder" and len(inputs.items) == 7
    for it in inputs.items:
        arr, err = load_image_file(it.path)
        assert err is None, it.source
        assert arr.dtype == np.uint8 and arr.shape == (40, 56, 3)
        assert resize_center_crop(arr, 32).shape == (32, 32, 3)
    sixteen, _ = load_image_file(str(root / "good" / "sixteen.png"))
    assert sixteen.max() > 200  # 16-bit scaled down, not clipped to white/black


def _zoo(root: Path, cifar_npz: Path, good: int) -> dict:
    from conftest import write_imagefolder

    write_imagefolder(root, cifar_npz, good, ext="jpg")
    bad = root / "zoo"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("this is not an image")
    full = (root / "airplane").glob("*.jpg").__next__().read_bytes()
    (bad / "truncated.jpg").write_bytes(full[: len(full) // 2])
    Image.new("1", (9000, 9000)).save(bad / "bomb.png")  # 81 Mpx, a few KB on disk
    return {"empty": 1, "not_image": 1, "truncated": 1, "decompression_bomb": 1}


def test_corrupt_zoo_is_counted_and_skipped(tmp_path, cifar_test_npz, taef2_dir):
    expected = _zoo(tmp_path / "in", cifar_test_npz, 40)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(tmp_path / "in"),
                                    "--output", str(out), "--resolution", "32", "--max-error-rate", "0.5"])
    assert res.exit_code == 0, res.output
    (mpath,) = out.glob("*.manifest.json")
    m = json.loads(mpath.read_text())
    assert m["totals"]["errors"] == expected and m["totals"]["samples"] == 40
    (stats,) = out.glob("*.stats.json")
    skipped = {s["source"]: s["error"] for s in json.loads(stats.read_text())["skipped"]}
    assert skipped == {"zoo/empty.jpg": "empty", "zoo/text.png": "not_image", "zoo/truncated.jpg": "truncated",
                       "zoo/bomb.png": "decompression_bomb"}
    assert "decompression_bomb=1" in res.output  # the summary table
    keys = [s["__key__"] for s in read_shard(next(out.glob("*.tar")))]
    assert len(keys) == 40 and not any("zoo" in k for k in keys)


def test_error_rate_guard_aborts_and_keeps_committed_shards(tmp_path, cifar_test_npz, taef2_dir):
    from conftest import write_imagefolder

    root = tmp_path / "in"
    write_imagefolder(root, cifar_test_npz, 60, ext="jpg")
    bad = root / "zz_broken"
    bad.mkdir()
    for i in range(60):
        (bad / f"{i:03d}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(root),
                                    "--output", str(out), "--resolution", "32", "--shard-size", "30",
                                    "--max-error-rate", "0.2"])
    assert res.exit_code == 1 and "exceeds --max-error-rate 0.2" in res.output
    assert len(list(out.glob("*.stats.json"))) >= 2  # the good shards stay committed


def test_taef2_download_path_checks_sha256(tmp_path, taef2_dir):
    import torch
    from safetensors.torch import load_file

    from gcl.synth.defaults import DownloadError, fetch_taef2

    src = tmp_path / "official"
    src.mkdir()
    for part in ("encoder", "decoder"):
        torch.save(load_file(str(taef2_dir / f"taef2_{part}.safetensors")), src / f"taef2_{part}.pth")
    fetch_taef2(tmp_path / "cache", f"file://{src}/{{name}}.pth")
    for part in ("encoder", "decoder"):
        assert (tmp_path / "cache" / f"taef2_{part}.safetensors").read_bytes() == (taef2_dir / f"taef2_{part}.safetensors").read_bytes()
    state = load_file(str(taef2_dir / "taef2_decoder.safetensors"))
    state["1.bias"] = state["1.bias"] + 1
    torch.save(state, src / "taef2_decoder.pth")
    with pytest.raises(DownloadError, match="does not match the published"):
        fetch_taef2(tmp_path / "cache2", f"file://{src}/{{name}}.pth")
    assert not (tmp_path / "cache2" / "taef2_decoder.safetensors").exists()


def test_default_resolution_prefers_gcl_home_then_shared(tmp_path, monkeypatch, taef2_dir):
    from gcl.synth import defaults

    monkeypatch.setenv("GCL_HOME", str(tmp_path / "home"))
    assert defaults.resolve_taef2() == taef2_dir  # nothing in GCL_HOME: ../shared
    assert defaults.resolve_cifar10("test").name == "cifar10_test.npz"
    home_model = tmp_path / "home" / "models" / "taef2"
    home_model.mkdir(parents=True)
    for f in defaults.TAEF2_SHA256:
        (home_model / f).write_bytes((taef2_dir / f).read_bytes())
    assert defaults.resolve_taef2() == home_model
    assert defaults.resolve_taef2("/explicit") == Path("/explicit")


def test_downloaded_cifar10_says_which_copy_it_is(tmp_path, monkeypatch, cifar_train_npz):
    """The official archive becomes npz files that describe themselves, so a manifest made from them
    (and a reference report) can say which copy of CIFAR-10 it came from; the JPEG copy in ../shared
    is known by its fingerprint."""
    import hashlib
    import io
    import pickle
    import tarfile

    import numpy as np

    from gcl.inputs import list_inputs
    from gcl.synth import defaults

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / "c.tar.gz").write_bytes(archive.getvalue())
    monkeypatch.setattr(defaults, "CIFAR10_MD5", hashlib.md5(archive.getvalue()).hexdigest())
    defaults.fetch_cifar10(tmp_path / "data", f"file://{tmp_path / 'c.tar.gz'}")
    inputs = list_inputs(tmp_path / "data" / "cifar10_train.npz")
    assert len(inputs.items) == 10
    assert defaults.input_description(inputs, inputs.fingerprint()).startswith("CIFAR-10 train, official pixels")
    shared = list_inputs(cifar_train_npz)
    assert "JPEG quality-75" in defaults.input_description(shared, shared.fingerprint() + "/limit=1000")
