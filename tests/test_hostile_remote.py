"""Remote shards: a server that accepts and never answers, or a closed port, is a bounded wait and
one line; gcl-synth verify really reads http(s) shards instead of calling them OK unread."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
import time

import pytest

import hostile
import gcl.streams


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(gcl.streams, "HTTP_TIMEOUT_S", 1.0)


@pytest.fixture
def silent_server():
    """Accepts connections (the kernel completes the handshake) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    sock.close()


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def file_server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _remote_manifest(tmp_path, base: str):
    manifest = hostile.shard_set(tmp_path / "set")
    data = json.loads(manifest.read_text())
    remote = tmp_path / "remote.manifest.json"
    remote.write_text(json.dumps(dict(data, base=base)))
    return manifest, remote


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["silent_server", "closed_port"])
def test_verify_and_train_on_a_dead_server_are_bounded_and_one_line(tmp_path, short_timeout, server, request):
    _, remote = _remote_manifest(tmp_path, request.getfixturevalue(server))
    t0 = time.time()
    result = hostile.synth_verify(remote, tmp_path)
    assert result.exit_code == 1 and "0/1 shards OK" in result.output, result.output
    bad = [ln for ln in result.output.splitlines() if ln.startswith("BAD")]
    assert len(bad) == 1 and "unreadable" in bad[0] and ("no answer within 1 s" in bad[0] or "cannot connect" in bad[0])
    result = hostile.train_shards(remote, tmp_path)
    assert "no readable samples" in hostile.one_line_error(result)
    assert time.time() - t0 < 60


def test_verify_reads_http_shards(tmp_path, file_server):
    folder, url = file_server
    manifest, remote = _remote_manifest(tmp_path, url)
    tar = manifest.parent / "hostile-000000.tar"
    (folder / tar.name).write_bytes(tar.read_bytes())
    result = hostile.synth_verify(remote, tmp_path)
    assert result.exit_code == 0 and "1/1 shards OK" in result.output, result.output
    data = bytearray(tar.read_bytes())
    data[1000] ^= 1
    (folder / tar.name).write_bytes(bytes(data))
    result = hostile.synth_verify(remote, tmp_path)
    assert result.exit_code == 1 and "sha256 mismatch" in result.output, result.output
    (folder / tar.name).unlink()
    result = hostile.synth_verify(remote, tmp_path)
    assert result.exit_code == 1 and "HTTP 404" in result.output, result.output
