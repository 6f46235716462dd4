"""Open a shard location for reading: a local path, an http(s) URL with bounded timeouts, or a
`pipe:` command the user typed (webdataset runs it through a shell; gcl.shardset and the recipe
loader make sure no file can supply one).

webdataset reads http(s) with `curl`, which has no timeout by default: a server that accepts and
never answers hung training for good. Here urllib's socket timeout bounds the connection and
every read, and a failure is an OSError naming the URL, counted or reported by the caller.
"""

from __future__ import annotations

import urllib.error
import urllib.request

# Seconds to connect, and between two reads of a response: generous for a slow object store, and
# still a bounded wait when a server stops answering.
HTTP_TIMEOUT_S = 60.0
HTTP_SCHEMES = ("http://", "https://")


class StreamError(OSError):
    """A location that cannot be opened or stops answering (one line naming it)."""


class _TimedResponse:
    """A response whose reads raise StreamError (naming the URL) instead of socket errors."""

    def __init__(self, url: str, response):
        self.url, self._response = url, response

    def read(self, n: int = -1) -> bytes:
        try:
            return self._response.read(n)
        except (OSError, ValueError) as exc:  # socket.timeout, a reset connection, a closed response
            raise StreamError(f"{self.url}: read failed ({_reason(exc)})") from None

    def close(self) -> None:
        self._response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return f"no answer within {HTTP_TIMEOUT_S:g} s"
    reason = getattr(exc, "reason", None) or exc
    return str(reason).splitlines()[0][:120] if str(reason) else type(exc).__name__


def open_stream(location: str, buffering: int = 1 << 20):
    """A binary stream to read `location` from (use it as a context manager)."""
    if location.startswith(HTTP_SCHEMES):
        try:
            response = urllib.request.urlopen(location, timeout=HTTP_TIMEOUT_S)  # noqa: S310 - http(s) only
        except urllib.error.HTTPError as exc:
            raise StreamError(f"{location}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise StreamError(f"{location}: cannot connect ({_reason(exc)})") from None
        return _TimedResponse(location, response)
    if location.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(location, "rb")
    if "://" in location:
        raise StreamError(f"{location}: unsupported scheme; shards are local files, http(s) URLs or a typed pipe:")
    return open(location, "rb", buffering=buffering)
