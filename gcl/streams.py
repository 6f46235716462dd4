"""Open a shard location for reading, through fsspec: a local path, an http(s) URL, any fsspec URL
(s3://, gs://, hf://, ... when its extra is installed), or a `pipe:` command the user typed
(webdataset runs it through a shell; gcl.shardset and the recipe loader make sure no file can
supply one).

gcl's rules for remote reads, as configuration of fsspec:
- bounded waits: http(s) connects and every read time out after HTTP_TIMEOUT_S (a server that
  accepts and never answers used to hang training for good; curl, webdataset's reader, has no
  timeout by default);
- a few retries: opening, and a read that fails mid-stream (the stream is reopened and the bytes
  already read are skipped), are retried READ_RETRIES times with a short backoff;
- one line: a failure is a StreamError (an OSError) naming the URL and the cause, counted or
  reported by the caller. A scheme whose fsspec package is missing names the extra to install.
"""

from __future__ import annotations

import time

from gcl.errors import UserError

# Seconds to connect, and between two reads of a response: generous for a slow object store, and
# still a bounded wait when a server stops answering.
HTTP_TIMEOUT_S = 60.0
HTTP_SCHEMES = ("http://", "https://")
READ_RETRIES = 2  # after the first try: transient resets and 5xx answers from object stores
RETRY_BACKOFF_S = 0.5
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hf": "hf"}  # scheme -> gcl extra


class StreamError(OSError):
    """A location that cannot be opened or stops answering (one line naming it)."""


class MissingObject(StreamError, FileNotFoundError):
    """A URL whose object is not there (a 404, a missing key): callers can say "missing"."""


class NeedsExtra(StreamError):
    """A URL scheme whose fsspec package is not installed, found while opening (names the extra)."""


class MissingExtraError(UserError):
    """A URL scheme whose fsspec package is not installed (the line names the extra)."""


def require_readers(locations) -> None:
    """Fail before any reading when a scheme among `locations` needs a package that is missing."""
    seen = set()
    for loc in locations:
        scheme = loc.split("://", 1)[0] if "://" in loc and not loc.startswith("pipe:") else ""
        if scheme and scheme not in seen:
            seen.add(scheme)
            try:
                filesystem(loc)
            except StreamError as exc:  # a missing package, or a scheme fsspec does not know
                raise MissingExtraError(str(exc)) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower() or "timed out" in str(exc):
        return f"no answer within {HTTP_TIMEOUT_S:g} s"
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"HTTP {status} {getattr(exc, 'message', '')}".strip()
    if isinstance(exc, FileNotFoundError):
        return "HTTP 404 not found" if exc.args and str(exc.args[0]).startswith(HTTP_SCHEMES) else "not found"
    reason = str(getattr(exc, "strerror", None) or exc or type(exc).__name__).splitlines()[0][:120]
    connect = isinstance(exc, ConnectionError) or "connect" in type(exc).__name__.lower()
    return f"cannot connect: {reason}" if connect else reason


def _permanent(exc: BaseException) -> bool:
    """Errors a retry cannot mend: a missing object, a refused credential, a bad request."""
    status = getattr(exc, "status", None)
    return isinstance(exc, (FileNotFoundError, PermissionError)) or (isinstance(status, int) and status < 500)


def scheme_of(location: str) -> str:
    """The URL scheme in lower case ("file" for a local path)."""
    return location.split("://", 1)[0].lower() if "://" in location else "file"


def storage_options(scheme: str, connect_s: float, read_s: float, retries: int) -> dict:
    """Bounded waits and a few retries for the stores gcl knows; credentials and endpoints come from
    each store's own environment (AWS_* variables and profiles for s3fs, ...), never from gcl."""
    if scheme in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": connect_s, "read_timeout": read_s,
                                  "retries": {"max_attempts": retries, "mode": "standard"}}}
    if scheme in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=connect_s,
                                                                   sock_read=read_s)}}
    return {}


def filesystem(location: str, connect_s: float | None = None, read_s: float | None = None,
               retries: int = READ_RETRIES):
    """(fsspec filesystem, path) for a URL or local path, with gcl's bounded waits (HTTP_TIMEOUT_S
    unless given); a scheme whose package is missing names the extra to install (NeedsExtra)."""
    import fsspec

    scheme = scheme_of(location)
    options = storage_options(scheme, connect_s or HTTP_TIMEOUT_S, read_s or HTTP_TIMEOUT_S, retries)
    try:
        if scheme in ("http", "https"):
            return fsspec.filesystem("http", **options), location
        return fsspec.core.url_to_fs(location, **options)
    except ImportError:
        extra = EXTRAS.get(scheme)
        hint = f"pip install 'gcl[{extra}]'" if extra else f"install the fsspec package for {scheme}://"
        raise NeedsExtra(f"{location}: {scheme}:// URLs need an extra package: {hint}") from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise StreamError(f"{location}: unsupported scheme ({str(exc)[:80]})") from None


def _open_remote(location: str):
    fs, path = filesystem(location)
    if location.startswith(HTTP_SCHEMES):
        # block_size=0: one streaming GET per shard (no ranged re-reads; servers without Range work).
        # A size given up front skips fsspec's HEAD probe, which reports any failure (a timeout, a
        # refused connection) as "file not found"; the GET's own status is then what we report.
        return fs.open(path, "rb", block_size=0, size=1)
    return fs.open(path, "rb", block_size=1 << 22)


class RemoteStream:
    """A sequential reader over an fsspec file: retries a failed open or read a few times (reopening
    and skipping what was already read), then raises StreamError naming the URL."""

    def __init__(self, location: str):
        self.url, self.pos = location, 0
        self._fh = self._retry(lambda: _open_remote(location), "cannot open")

    def _retry(self, action, what: str):
        for attempt in range(READ_RETRIES + 1):
            try:
                return action()
            except StreamError:
                raise
            except Exception as exc:  # noqa: BLE001 - aiohttp, botocore, ... errors: all become one line
                if _permanent(exc) or attempt == READ_RETRIES:
                    kind = MissingObject if isinstance(exc, FileNotFoundError) else StreamError
                    error = kind(f"{self.url}: {what} ({_reason(exc)})")
                    error.reason = _reason(exc)
                    raise error from None
                time.sleep(RETRY_BACKOFF_S * (attempt + 1))

    def _reopen_at(self, pos: int):
        self._close_quietly()
        self._fh = _open_remote(self.url)
        left = pos
        while left:
            got = self._fh.read(min(left, 1 << 22))
            if not got:
                raise StreamError(f"{self.url}: shorter on a retry than before")
            left -= len(got)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._fh.read(n)
        except Exception as exc:  # noqa: BLE001 - retried below, then one line
            if _permanent(exc) or READ_RETRIES == 0:
                raise StreamError(f"{self.url}: read failed ({_reason(exc)})") from None
            data = self._retry(lambda: (self._reopen_at(self.pos), self._fh.read(n))[1], "read failed")
        self.pos += len(data)
        return data

    def _close_quietly(self):
        try:
            self._fh.close()
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; nothing is lost
            pass

    def close(self) -> None:
        self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stream(location: str, buffering: int = 1 << 20):
    """A binary stream to read `location` from sequentially (use it as a context manager)."""
    if location.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(location, "rb")
    if "://" in location and not location.startswith("file://"):
        return RemoteStream(location)
    return open(location.removeprefix("file://"), "rb", buffering=buffering)


def list_folder(location: str) -> list[str]:
    """The file names directly inside a store folder (s3://bucket/prefix, gs://..., hf://...), sorted;
    [] when nothing is there. A store that cannot be listed (no answer, refused credentials) is one
    StreamError naming the URL and the cause, after READ_RETRIES retries."""
    return sorted(folder_entries(location))


# What names one version of a stored object, by store: S3's ETag, GCS's generation, the hub's blob id.
VERSION_KEYS = ("ETag", "etag", "generation", "blob_id", "LastModified", "mtime")


def folder_entries(location: str) -> dict[str, str]:
    """{file name: "size:version"} of the files directly inside a store folder (one listing): what a
    verification stamp keys a remote shard by, as size and mtime key a local one."""
    fs, path = filesystem(location)
    path = path.rstrip("/")
    for attempt in range(READ_RETRIES + 1):
        try:
            fs.invalidate_cache(path)  # s3fs & co. cache listings: a folder another process is filling changes
            entries = fs.ls(path, detail=True)
            return {e["name"].rstrip("/").rsplit("/", 1)[-1]: f"{e.get('size')}:{_version(e)}" for e in entries
                    if e.get("type") != "directory" and e["name"].rstrip("/") != path}
        except FileNotFoundError:
            return {}
        except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, ... errors: all become one line
            if _permanent(exc) or attempt == READ_RETRIES:
                raise StreamError(f"{location}: cannot list ({_reason(exc)})") from None
            time.sleep(RETRY_BACKOFF_S * (attempt + 1))
    return {}


def _version(entry: dict) -> str:
    return str(next((entry[k] for k in VERSION_KEYS if entry.get(k) is not None), ""))
