"""Inputs made by dataset tools: img2dataset's files layout, and WebDataset inputs for gcl-synth: tar shards on a local disk or any fsspec URL (s3://, gs://,
hf://, http(s)://), as a brace pattern, a comma/space list, or a folder of `.tar` files.

Listing reads each tar once through `tarfile` (names, sizes, and the small label members);
reading a shard task streams each of its tars once through webdataset's tar iterator, taking
only the image members it needs. Nothing is decoded by webdataset (its default decoders
unpickle): gcl decodes the image bytes itself with Pillow, as it does for files. No `pipe:`.
Remote reads have bounded connect/read timeouts and a few retries; a shard task that still fails
is retried by the distributor.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from gcl.inputs import IMAGE_EXTENSIONS, MAX_CLASSES, InputError, InputItem, InputSet

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
RETRIES = 3
MAX_LABEL_MEMBER_BYTES = 1 << 20  # a cls/json member past 1 MiB is not a label: counted as unlabelled noise


class WebInputError(InputError):
    """A WebDataset input that cannot be listed or opened (one line naming the URL and the cause)."""


def public_name(url: str) -> str:
    """The URL without user info, query or fragment: what may appear in a manifest or a log."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    host, _, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}/{path}"


def url_fs(url: str):
    """(filesystem, path) for a URL or local path, opened by the core's one fsspec opener
    (gcl.streams: bounded waits and retries, the extra a scheme needs)."""
    from gcl.streams import EXTRAS, NeedsExtra, StreamError, filesystem, scheme_of

    protocol = scheme_of(url)
    try:
        return filesystem(url, CONNECT_TIMEOUT_S, READ_TIMEOUT_S, RETRIES)
    except NeedsExtra:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'gcl[{extra}]'" if extra else "install the fsspec filesystem for it"
        raise WebInputError(f"{protocol}:// inputs need an extra package: {hint}") from None
    except StreamError as exc:
        raise WebInputError(f"cannot open {public_name(url)}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_webdataset_spec(spec: str) -> bool:
    """A URL, a brace pattern or list of .tar files, or a local folder of .tar files and no images."""
    if spec.startswith("pipe:"):
        raise WebInputError("pipe: inputs are not accepted (they run a shell command); give a path or URL")
    if "://" in spec:
        return True
    if Path(spec).exists():
        path = Path(spec)
        return path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar")) and not _has_images(path))
    return "{" in spec or "," in spec or spec.strip().endswith(".tar") or len(spec.split()) > 1


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def expand_urls(spec: str) -> list[str]:
    """Every tar the spec names, in order: braces expanded, lists split, folders listed."""
    from braceexpand import braceexpand

    if "://" not in spec and Path(spec).is_dir():
        return sorted(str(p) for p in Path(spec).glob("*.tar"))
    urls = []
    for part in spec.replace(",", " ").split():
        for url in braceexpand(part):
            urls.extend([url] if url.endswith(".tar") else _list_folder(url))
    if not urls:
        raise WebInputError(f"no .tar files in {public_name(spec)}")
    return urls


def _list_folder(url: str) -> list[str]:
    fs, path = url_fs(url)
    try:
        found = sorted(p for p in fs.glob(path.rstrip("/") + "/*.tar"))
    except Exception as exc:  # noqa: BLE001 - a store's own errors (403, no bucket): one line
        raise WebInputError(f"cannot list {public_name(url)}: {first_line(exc)}") from None
    if not found:
        raise WebInputError(f"no .tar files in {public_name(url)}")
    return [fs.unstrip_protocol(p) if "://" in url else p for p in found]


def _relative_names(urls: list[str]) -> list[str]:
    """Each tar's path below the tars' common folder, without `.tar`: stable across hosts and
    buckets (a copy of the set elsewhere has the same names), and never a credential."""
    paths = [PurePosixPath(public_name(u).split("://", 1)[-1]) for u in urls]
    parents = [p.parent.parts for p in paths]
    common = 0
    while all(len(p) > common and p[common] == parents[0][common] for p in parents):
        common += 1
    return [PurePosixPath(*p.parts[common:]).with_suffix("").as_posix() for p in paths]


def is_img2dataset_files(root: Path) -> bool:
    """img2dataset's files layout: numbered folders (00000/, 00001/, ...) whose images each have a
    .json sidecar. Those folders are shards of one set, never classes."""
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not subdirs or not all(d.name.isdigit() for d in subdirs):
        return False
    first = next((p for p in sorted(subdirs[0].iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS), None)
    return first is not None and first.with_suffix(".json").is_file()


def list_img2dataset(root: Path, flat, label_key: str | None):
    """img2dataset's files layout from its folder listing (`flat`): unlabelled, unless label_key
    names a field of each image's .json sidecar."""
    flat.items = [replace(it, label=None) for it in flat.items]  # numbered folders are not classes
    if label_key is None:
        return InputSet(flat.items, None, "img2dataset", flat.root)
    items = []
    for it in flat.items:
        try:
            value = json.loads(Path(it.path).with_suffix(".json").read_text()).get(label_key)
        except (OSError, ValueError, AttributeError):
            value = None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InputError(f"{it.source}: its .json has no {label_key!r} label (an integer or a text)")
        items.append(replace(it, label=value))
    items, names = _index_labels(items)
    return InputSet(items, names, "img2dataset", flat.root)


def list_webdataset(spec: str, label_key: str | None = None):
    """An InputSet (kind "webdataset") of every sample with an image member; labels from `cls`, or
    from the json member's field `label_key`. The fingerprint covers each tar's name, size and
    etag and each image member's name and size, never the URL's host, credentials or signature."""
    urls = expand_urls(spec)
    items, digest = [], hashlib.sha256(b"webdataset")
    for url, name in zip(urls, _relative_names(urls)):
        fs, path = url_fs(url)
        try:
            info = fs.info(path)
            with fs.open(path, "rb") as fh:
                samples = _tar_samples(fh, label_key)
        except (OSError, tarfile.TarError, WebInputError) as exc:
            raise InputError(f"cannot read {public_name(url)}: {first_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - stores raise their own types (403, timeouts)
            raise InputError(f"cannot read {public_name(url)}: {type(exc).__name__}: {first_line(exc)}") from None
        etag = str(info.get("ETag") or info.get("etag") or "")
        digest.update(f"{name}\0{info.get('size')}\0{etag}\n".encode())
        for key, (member, size, label) in sorted(samples.items()):
            items.append(InputItem(f"{name}/{key}", url, -1, label, member))
            digest.update(f"{key}\0{member}\0{size}\0{label}\n".encode())
    if not items:
        raise InputError(f"no images ({'/'.join(IMAGE_MEMBERS)} members) in {public_name(spec)}")
    labels = [it.label for it in items]
    missing = sum(lab is None for lab in labels)
    if missing and (label_key or missing < len(labels)):  # asked for labels, or only some have them
        raise InputError(f"{missing} of {len(items)} samples in {public_name(spec)} have no label "
                         f"({'json field ' + repr(label_key) if label_key else 'cls member'})")
    items, class_names = _index_labels(items)
    root = public_name(urls[0].rsplit("/", 1)[0] if len(urls) > 1 or "://" in urls[0] else urls[0])
    return InputSet(items, class_names, "webdataset", root, digest.hexdigest())


def _tar_samples(fh, label_key: str | None) -> dict:
    """key -> (image member name, its size, label or None), from the tar's headers and its small
    label members (cls or json); image data is skipped, not read, where the file can seek."""
    from webdataset.tariterators import base_plus_ext

    images, labels = {}, {}
    with tarfile.open(fileobj=fh, mode="r:") as tar:
        for info in tar:
            key, ext = base_plus_ext(info.name)
            if not info.isreg() or key is None:
                continue
            ext = ext.lower()
            if ext in IMAGE_MEMBERS and key not in images:
                images[key] = (info.name, info.size)
            elif ext == ("json" if label_key else "cls") and info.size <= MAX_LABEL_MEMBER_BYTES:
                labels[key] = _parse_label(tar.extractfile(info).read(), label_key)
    return {key: (member, size, labels.get(key)) for key, (member, size) in images.items()}


def _parse_label(data: bytes, label_key: str | None):
    """An int (cls text, or an integer json field) or a str (a json text field); None if absent."""
    try:
        if label_key is None:
            return int(data.decode("utf-8").strip())
        value = json.loads(data).get(label_key)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


def _index_labels(items: list):
    """Integer labels stay (class names "0".."max"); text labels become indices of their sorted names."""
    labels = [it.label for it in items]
    if labels[0] is None:
        return items, None
    if all(isinstance(lab, int) for lab in labels):
        if min(labels) < 0 or max(labels) >= MAX_CLASSES:
            raise InputError(f"labels run from {min(labels)} to {max(labels)}, outside [0, {MAX_CLASSES})")
        return items, [str(i) for i in range(max(labels) + 1)]
    names = sorted({str(lab) for lab in labels})
    if len(names) > MAX_CLASSES:
        raise InputError(f"{len(names)} distinct labels, over the {MAX_CLASSES} class cap")
    index = {n: i for i, n in enumerate(names)}
    return [replace(it, label=index[str(it.label)]) for it in items], names


def iter_member_bytes(items: list):
    """(item, bytes or None) for tar-backed items, in the items' order: each tar is streamed once
    (webdataset's tar iterator, selecting only the wanted image members); a member the listing
    saw but the tar no longer holds comes back as None (a counted skip)."""
    from webdataset.tariterators import tar_file_iterator

    start = 0
    while start < len(items):
        url = items[start].path
        stop = start
        while stop < len(items) and items[stop].path == url:
            stop += 1
        group = items[start:stop]
        wanted = {it.member for it in group}
        fs, path = url_fs(url)
        buffered: dict[str, bytes] = {}
        position = 0
        with fs.open(path, "rb") as fh:
            for member in tar_file_iterator(fh, select_files=wanted.__contains__):
                buffered[member["fname"]] = member["data"]
                while position < len(group) and group[position].member in buffered:
                    yield group[position], buffered.pop(group[position].member)
                    position += 1
        for it in group[position:]:
            yield it, buffered.pop(it.member, None)
        start = stop
