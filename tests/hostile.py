"""Crafted inputs for the hostile-input tests: tars written byte by byte (so a name need not be
UTF-8 and a size field can lie), small labelled shard sets with one crafted family, manifests
with crafted fields, and the gcl commands that read them, called through one helper each so a
renamed option is a one-line change here."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from gcl.manifest import write_manifest
from gcl.shards import shard_name

NAME = "hostile"
FAMILIES = 6  # per set; the crafted one is family CRAFTED
CRAFTED = 2


def tar_header(name: bytes, size: int, size_field: bytes | None = None) -> bytes:
    """A ustar header with a correct checksum for whatever name and size field it is given."""
    h = bytearray(512)
    h[: len(name)] = name
    h[100:108] = b"0000444\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar_bytes(members: list[tuple[bytes, bytes]], lying_size: bytes | None = None) -> bytes:
    """A tar of (name, data) members; with lying_size the LAST member's size field says that."""
    out = io.BytesIO()
    for i, (name, data) in enumerate(members):
        last = i == len(members) - 1
        out.write(tar_header(name, len(data), lying_size if last else None))
        out.write(data + b"\0" * ((-len(data)) % 512))
    if lying_size is None:
        out.write(b"\0" * 1024)
    return out.getvalue()


def _png(seed: int, label: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
    x[..., label] += 180  # class-coloured, so raw-pixel kNN has something to find
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def family(i: int) -> list[tuple[bytes, bytes]]:
    key, label = f"k{i:03d}".encode(), i % 3
    meta = {"source": f"x/{i}", "views": [{"view": v, "ops": [{"op": "noise", "strength": 0.5}]} for v in range(2)]}
    return [(key + b".orig.png", _png(i, label)), (key + b".view0.png", _png(100 + i, label)),
            (key + b".view1.png", _png(200 + i, label)), (key + b".cls", str(label).encode()),
            (key + b".json", json.dumps(meta).encode())]


# Each case changes family CRAFTED: (member suffix to change, new name or None, new data or None).
MEMBER_CASES = {
    "name-not-utf8": (b".orig.png", b"k\xff\xfe\x80.orig.png", None),
    "json-invalid": (b".json", None, b"{not json"),
    "json-empty": (b".json", None, b""),
    "json-deep": (b".json", None, b"[" * 200_000 + b"]" * 200_000),
    "json-not-object": (b".json", None, b"[1, 2, 3]"),
    "cls-abc": (b".cls", None, b"abc"),
    "cls-negative": (b".cls", None, b"-3"),
    "cls-huge": (b".cls", None, b"1000000000000"),
}


def crafted_members(case: str) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """All members of a set whose family CRAFTED carries `case` (and the lying size field, if any)."""
    members = []
    for i in range(FAMILIES):
        fam = family(i)
        if i == CRAFTED and case in MEMBER_CASES:
            suffix, new_name, new_data = MEMBER_CASES[case]
            fam = [((new_name or n), (new_data if new_data is not None else d)) if n.endswith(suffix) else (n, d)
                   for n, d in fam]
        members += fam
    if case == "size-field":  # a header claiming 64 GiB, on the last member of a small file
        return members + [(b"k999.orig.png", _png(999, 0))], b"777777777777"
    return members, None


def shard_set(folder: Path, case: str = "") -> Path:
    """A labelled shard set of FAMILIES families (one crafted), with a manifest whose claims
    (bytes, sha256, samples) match the tar, so only the crafted content is wrong."""
    members, lying = crafted_members(case)
    return write_set(folder, tar_bytes(members, lying), FAMILIES)


def write_set(folder: Path, data: bytes, samples: int) -> Path:
    """One shard of these tar bytes and a manifest whose claims match them."""
    folder.mkdir(parents=True, exist_ok=True)
    tar = folder / shard_name(NAME, 0)
    tar.write_bytes(data)
    manifest = {"name": NAME, "views": 2, "has_orig": True, "labelled": True, "class_names": ["a", "b", "c"],
                "resolution": 16,
                "shards": [{"url": tar.name, "index": 0, "samples": samples, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()}]}
    return write_manifest(manifest, folder / f"{NAME}.manifest.json", folder)


def _raw_json(value) -> str:
    return json.dumps(value)


# manifest field -> crafted JSON text replacing its value (raw text, so NaN and deep nesting fit)
MANIFEST_CASES = {
    "samples-infinity": ("shards.0.samples", "Infinity"),
    "samples-nan": ("shards.0.samples", "NaN"),
    "views-string": ("views", '"2"'),
    "resolution-string": ("resolution", '"64"'),
    "version-string": ("version", '"2"'),
    "deep-json": ("name", "[" * 100_000 + "]" * 100_000),
    "base-climbs": ("base", '"../../../../../../../.."'),
}


def crafted_manifest(folder: Path, case: str) -> Path:
    manifest = shard_set(folder)
    field, text = MANIFEST_CASES[case]
    data = json.loads(manifest.read_text())
    placeholder = "@@CRAFTED@@"
    if field.startswith("shards.0."):
        data["shards"][0][field.split(".")[-1]] = placeholder
    else:
        data[field] = placeholder
    manifest.write_text(json.dumps(data).replace(f'"{placeholder}"', text))
    return manifest


def npz(path: Path, case: str = "", n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 8, 8, 3)).astype(np.uint8)
    images[np.arange(n), :, :, labels] += 180
    data = {"images": images, "labels": labels, "class_names": np.array(["a", "b", "c"])}
    if case == "object-images":
        data["images"] = np.array([images[i] for i in range(n)] + [None], dtype=object)[:n]
    elif case == "string-labels":
        data["labels"] = np.array([str(v) for v in labels])
    elif case == "float-images":
        data["images"] = images.astype(np.float32) / 255.0
    elif case == "uint16-images":
        data["images"] = images.astype(np.uint16) * 257
    elif case == "no-channel-axis":
        data["images"] = images[..., 0]
    elif case == "labels-past-names":
        data["labels"] = labels + 7
    np.savez(path, **data, allow_pickle=True) if case == "object-images" else np.savez(path, **data)
    return path


NPZ_CASES = ["object-images", "string-labels", "float-images", "uint16-images", "no-channel-axis", "labels-past-names"]


# ------------------------------------------------------------------ the commands, one helper each
def sigint_default() -> None:
    """Popen preexec_fn: the child takes Ctrl-C as a foreground command does. A shell starts a
    background job (`pytest ... &` in a script) with SIGINT ignored, its children inherit that,
    and Python then never raises KeyboardInterrupt: a SIGINT test would find the child running."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def invoke(main, args):
    return CliRunner().invoke(main, [str(a) for a in args])


def synth_run(data: Path, tmp: Path):
    from conftest import TAEF2
    from gcl.synth.cli import main

    return invoke(main, ["run", "--input", data, "--model", TAEF2, "--output", tmp / "synth", "--resolution", 16,
                         "--no-progress"])


def synth_verify(manifest: Path, tmp: Path):
    from gcl.synth.cli import main

    return invoke(main, ["verify", manifest])


def eval_inspect(shards: Path, tmp: Path):
    from gcl.eval.cli import main

    return invoke(main, ["inspect", shards, "--output", tmp / "sheet.png"])


def eval_knn(data: Path, tmp: Path, test: Path | None = None):
    from gcl.eval.cli import main

    return invoke(main, ["knn", "--raw-pixels", "--no-baselines", "--eval-train", data, "--eval-test", test or data,
                         "--output", tmp / "eval",
                         "--k", 3])


def train_shards(shards: Path, tmp: Path, *extra):
    from gcl.train.cli import main

    return invoke(main, ["--shards", shards, "--gen-prob", 0, "--epochs", 1, "--batch-size", 2, "--num-workers", 0,
                         "--accelerator", "cpu", "--output", tmp / "run", *extra])


def train_input(data: Path, tmp: Path):
    from gcl.train.cli import main

    return invoke(main, ["--input", data, "--gen-prob", 0, "--epochs", 1, "--batch-size", 2, "--num-workers", 0,
                         "--accelerator", "cpu", "--output", tmp / "run", "--max-steps-per-epoch", 2])


def one_line_error(result) -> str:
    """The error a command printed, asserting it is one line and not a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output[-2000:]
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output[-2000:]
    return errors[0]
