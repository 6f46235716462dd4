"""Shared fixtures: offline hub, the real ../shared data and TAEF2, small real-image folders."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub name must fail fast, never hang ~23 s on the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# shard-set verification stamps (gcl.shardcheck.verify_once) go to a folder of this session, not
# the user's cache: tests start from unchecked sets, and leave nothing behind
if "GCL_CACHE_DIR" not in os.environ:
    os.environ["GCL_CACHE_DIR"] = tempfile.mkdtemp(prefix="gcl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GCL_CACHE_DIR"], True)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CIFAR_TRAIN = SHARED / "data" / "cifar10_train.npz"
CIFAR_TEST = SHARED / "data" / "cifar10_test.npz"
TAEF2 = SHARED / "models" / "taef2"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: tests need ../shared beside the checkout")
    return path


@pytest.fixture(scope="session")
def cifar_test_npz() -> Path:
    return _need(CIFAR_TEST)


@pytest.fixture(scope="session")
def cifar_train_npz() -> Path:
    return _need(CIFAR_TRAIN)


@pytest.fixture(scope="session")
def taef2_dir() -> Path:
    return _need(TAEF2)


def write_imagefolder(root: Path, npz: Path, count: int, ext: str = "png", start: int = 0) -> Path:
    """An ImageFolder (class subfolders) of real CIFAR images."""
    from PIL import Image

    with np.load(npz) as z:
        images, labels, names = z["images"][start : start + count], z["labels"][start : start + count], z["class_names"]
    for i, (img, lab) in enumerate(zip(images, labels)):
        d = root / str(names[lab])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{start + i:05d}.{ext}")
    return root


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory, cifar_test_npz) -> Path:
    """300 real CIFAR-10 test images as an ImageFolder of PNG files."""
    return write_imagefolder(tmp_path_factory.mktemp("cifar_folder"), cifar_test_npz, 300)


@pytest.fixture(scope="session")
def tiny_vqgan_dir(tmp_path_factory) -> Path:
    """A random-init diffusers VQModel built from a small config, saved and loaded like a real one."""
    import torch
    from diffusers import VQModel

    torch.manual_seed(0)
    model = VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
        latent_channels=8, norm_num_groups=8, num_vq_embeddings=64, vq_embed_dim=8, sample_size=32,
    )
    path = tmp_path_factory.mktemp("tiny_vqgan")
    model.save_pretrained(path)
    return path


def _forget_s3_clients() -> None:
    """fsspec caches one S3FileSystem per set of arguments: one made for an earlier server (another
    port) would be reused, so each test starts with none."""
    import fsspec

    fsspec.config.conf.pop("s3", None)
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_endpoint(monkeypatch):
    """moto's standalone S3 server on 127.0.0.1 and a free port; s3fs finds it via AWS_ENDPOINT_URL."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in this process, across servers: each test starts with none
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    _forget_s3_clients()
    yield endpoint
    _forget_s3_clients()
    server.stop()
