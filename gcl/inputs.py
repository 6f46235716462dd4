"""Reader: list image inputs (ImageFolder, flat folder, npz archive) and load them as RGB arrays.

Listing is sorted and deterministic. Loading never raises for a bad file: it returns an error
type ("truncated", "not_image", "empty", "decompression_bomb", "extreme_aspect", "unreadable") that the worker
counts and logs, so one bad file never stops a run.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gcl.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Pillow's own bomb limit is ~89 Mpx (warning) / 179 Mpx (error); we refuse anything past 64 Mpx
# because nothing in GCL needs it and a 64 Mpx RGB decode already costs ~200 MB.
MAX_PIXELS = 64_000_000
# Resizing the short side to the target size scales the long side too: a 250000x1 strip (0.4%
# of the pixel cap) would become a 32 x 8,000,000 intermediate (~1 GB). No photo or panorama
# GCL uses is longer than 10:1, so anything past that is a counted skip before decoding.
MAX_ASPECT = 10
# Labels index per-class arrays (kNN votes, a linear head): a label of 10^12 must not become an
# allocation of terabytes. ImageNet-21k has 21,841 classes.
MAX_CLASSES = 65_536


def extreme_aspect(width: int, height: int) -> bool:
    return max(width, height) > MAX_ASPECT * max(1, min(width, height))


@dataclass(frozen=True)
class InputItem:
    """One input image: where it is, its label, and a stable source name (relative path)."""

    source: str  # relative path (folder) or "npzstem/000123" (npz)
    path: str  # absolute file path, or the npz path for archive items
    index: int = -1  # row in the npz archive, -1 for files
    label: int | None = None
    member: str | None = None  # the image member's name inside the tar at `path` (WebDataset inputs)


@dataclass
class InputSet:
    items: list[InputItem]
    class_names: list[str] | None
    kind: str  # "imagefolder" | "flat" | "npz" | "img2dataset" (its files layout) | "webdataset"
    root: str  # for display: a local path, or a URL without credentials
    listing_digest: str | None = None  # WebDataset inputs: the hash of their listing (gcl.webinputs)

    def fingerprint(self) -> str:
        """Hash of the input list (names, sizes, labels); npz inputs hash the image bytes."""
        if self.listing_digest is not None:
            return self.listing_digest
        h = hashlib.sha256()
        h.update(self.kind.encode())
        if self.kind == "npz":
            with np.load(self.root, allow_pickle=False) as z:
                h.update(np.ascontiguousarray(z["images"]).tobytes())
                if "labels" in z.files:
                    h.update(np.asarray(z["labels"]).astype(np.int64).tobytes())
        else:
            for it in self.items:
                h.update(f"{it.source}\0{os.path.getsize(it.path) if os.path.exists(it.path) else -1}\0{it.label}\n".encode())
        return h.hexdigest()


class InputError(UserError):
    """The input cannot be used at all (a configuration error, raised before any work)."""


def list_inputs(path: str | os.PathLike, label_key: str | None = None) -> InputSet:
    """List an input: npz, image folder, img2dataset's files layout, or WebDataset tars (a
    pattern, list or folder of .tar, local or any fsspec URL). label_key names the json field that
    holds the label (WebDataset and img2dataset inputs; else labels come from `cls`, or none)."""
    from gcl.webinputs import is_img2dataset_files, is_webdataset_spec, list_img2dataset, list_webdataset

    if is_webdataset_spec(str(path)):
        return list_webdataset(str(path), label_key)
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"input file {path} is not an .npz archive; pass a folder or an .npz with 'images'")
        inputs = _list_npz(path)
    elif is_img2dataset_files(path):
        return list_img2dataset(path, _list_folder(path), label_key)
    else:
        inputs = _list_folder(path)
    if label_key is not None:
        raise InputError(f"--label-key applies to WebDataset and img2dataset inputs, not to {inputs.kind} {path}")
    return inputs


def _list_npz(path: Path) -> InputSet:
    """Check an npz before any work: images (N,H,W,C) uint8 with C in 1/3/4, integer labels in
    [0, MAX_CLASSES) (one per image), text class names. Anything else is one line naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            if "images" not in files:
                raise InputError(f"{path} has no 'images' array (found: {', '.join(files)})")
            with z.zip.open("images.npy") as fh:  # the header only: the images stay on disk until read
                shape, dtype, _fortran = _npy_header(fh)
            if dtype.hasobject:
                raise ValueError("'images' is an object array (pickled); gcl reads plain uint8 arrays only")
            labels = z["labels"] if "labels" in files else None
            names = z["class_names"] if "class_names" in files else None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - object (pickled) arrays, a damaged zip: the archive is unusable
        raise InputError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if dtype != np.uint8:
        raise InputError(f"{path}: 'images' are {dtype}, gcl reads uint8 (0-255); convert them first, "
                         "e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]")
    if len(shape) != 4 or shape[-1] not in (1, 3, 4) or min(shape) < 1:
        raise InputError(f"{path}: 'images' must be (N,H,W,3) uint8, got shape {shape}")
    if extreme_aspect(shape[2], shape[1]):
        raise InputError(f"{path}: images of {shape[2]}x{shape[1]} px are over the {MAX_ASPECT}:1 aspect cap")
    if labels is not None:
        labels = _npz_labels(path, labels, shape[0], None if names is None else len(names))
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise InputError(f"{path}: 'class_names' must be a 1-d array of text, got {names.dtype} {names.shape}")
        names = [str(s) for s in names]
    stem = path.stem
    items = [
        InputItem(f"{stem}/{i:07d}", str(path.resolve()), i, None if labels is None else int(labels[i]))
        for i in range(shape[0])
    ]
    return InputSet(items, names, "npz", str(path.resolve()))


def _npz_labels(path: Path, labels: np.ndarray, count: int, num_names: int | None) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise InputError(f"{path}: 'labels' must be {count} integers (one per image), got {labels.dtype} {labels.shape}")
    limit = MAX_CLASSES if num_names is None else num_names
    if count and (labels.min() < 0 or labels.max() >= limit):
        what = f"the {num_names} class_names" if num_names is not None else f"[0, {MAX_CLASSES})"
        raise InputError(f"{path}: 'labels' run from {labels.min()} to {labels.max()}, outside {what}")
    return labels.astype(np.int64)


def _list_folder(root: Path) -> InputSet:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise InputError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) under {root}")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    top_level_files = [p for p in files if p.parent == root]
    labelled = bool(subdirs) and not top_level_files
    class_to_idx = {c: i for i, c in enumerate(subdirs)} if labelled else {}
    items = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        label = class_to_idx[rel.split("/", 1)[0]] if labelled else None
        items.append(InputItem(rel, str(p.resolve()), -1, label))
    return InputSet(items, subdirs if labelled else None, "imagefolder" if labelled else "flat", str(root.resolve()))


class NpzCache:
    """Keeps one npz's images in memory per process (CIFAR-scale archives are ~60 MB)."""

    _arrays: dict[str, np.ndarray] = {}

    @classmethod
    def images(cls, path: str) -> np.ndarray:
        if path not in cls._arrays:
            with np.load(path, allow_pickle=False) as z:
                cls._arrays[path] = z["images"]
        return cls._arrays[path]


def _npy_header(fh) -> tuple[tuple, np.dtype, bool]:
    """(shape, dtype, fortran_order) of the .npy stream at fh, read from its header."""
    version = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(fh)
    return shape, dtype, fortran


class NpzRows:
    """Rows of an npz's 'images' read from the archive one at a time, never the whole array:
    sequential reads cost one row of memory (a compressed member is decompressed as it goes)."""

    _open: dict[str, "NpzRows"] = {}

    def __init__(self, path: str):
        import zipfile

        self._zip = zipfile.ZipFile(path)
        self._fh = self._zip.open("images.npy")
        shape, dtype, fortran = _npy_header(self._fh)
        if dtype != np.uint8 or len(shape) != 4:
            raise InputError(f"{path}: 'images' must be an (N,H,W,C) uint8 array")
        # rows of a Fortran-ordered array are not contiguous in the file: such an archive is loaded whole
        self._whole = NpzCache.images(path) if fortran else None
        self.shape, self._start = shape, self._fh.tell()
        self._row_bytes = int(np.prod(shape[1:]))

    @classmethod
    def row(cls, path: str, index: int) -> np.ndarray:
        if path not in cls._open:
            if len(cls._open) >= 4:  # a few archives open at a time (train/test of a probe)
                cls._open.pop(next(iter(cls._open)))._zip.close()
            cls._open[path] = cls(path)
        reader = cls._open[path]
        if reader._whole is not None:
            return reader._whole[index]
        reader._fh.seek(reader._start + index * reader._row_bytes)
        data = reader._fh.read(reader._row_bytes)
        return np.frombuffer(data, dtype=np.uint8).reshape(reader.shape[1:])


def npz_row(path: str, index: int) -> np.ndarray:
    """One npz image as (H, W, 3) uint8 RGB, read from the file (see NpzRows)."""
    return _npz_rgb(NpzRows.row(path, index))


def _npz_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr.astype(np.uint8, copy=False))


def load_rgb(item: InputItem) -> tuple[np.ndarray | None, str | None]:
    """Load one input as an (H, W, 3) uint8 RGB array; returns (array, None) or (None, error type)."""
    if item.index >= 0:
        return _npz_rgb(NpzCache.images(item.path)[item.index]), None
    if item.member is not None:
        raise ValueError("a tar member is read with its tar (gcl.webinputs.iter_member_bytes), then load_image_bytes")
    return load_image_file(item.path)


def load_image_file(path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        if os.path.getsize(path) == 0:
            return None, "empty"
    except OSError:
        return None, "unreadable"
    return _decode_image(path)


def load_image_bytes(data: bytes | None) -> tuple[np.ndarray | None, str | None]:
    """load_image_file for bytes read from a tar member (None: the member was missing)."""
    import io

    if data is None:
        return None, "missing"
    if not data:
        return None, "empty"
    return _decode_image(io.BytesIO(data))


def _decode_image(source) -> tuple[np.ndarray | None, str | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    return None, "decompression_bomb"
                if extreme_aspect(img.width, img.height):
                    return None, "extreme_aspect"
                img.load()
                return to_rgb_array(img), None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "decompression_bomb"
    except UnidentifiedImageError:
        return None, "not_image"
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc).lower()
        if "truncated" in msg or "broken data stream" in msg or "image file is truncated" in msg:
            return None, "truncated"
        return None, "unreadable"


def to_rgb_array(img) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB. Alpha is composited on white (as a viewer shows it)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def resize_center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to `size` (bicubic, antialiased), then center-crop to size x size."""
    from PIL import Image

    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = Image.fromarray(arr).resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
