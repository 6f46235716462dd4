"""WebDataset inputs to gcl-synth: local tars (pattern, list, folder), img2dataset's tar and files
layouts, a remote read over a local http server, and S3 through moto's standalone server."""

import functools
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gcl.inputs import InputError, list_inputs
from gcl.shards import read_shard
from gcl.synth.cli import main


def _jpeg(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(folder: Path, shards: int = 2, per_shard: int = 4, cls: bool = True, i2d: bool = False) -> list[Path]:
    """Tiny tars; sample i has label i % 3 in `cls` (or, img2dataset-style, in its json only).
    Each tar also holds a .pyd member that must never be unpickled."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = folder / (f"{s:05d}.tar" if i2d else f"part-{s:06d}.tar")
        with tarfile.open(path, "w") as tar:
            for j in range(per_shard):
                i = s * per_shard + j
                key = f"{i:09d}" if i2d else f"sample{i:04d}"
                _add(tar, f"{key}.jpg", _jpeg(rng))
                _add(tar, f"{key}.json", json.dumps({"label": i % 3, "caption": f"c{i}", "key": key}).encode())
                if cls:
                    _add(tar, f"{key}.cls", str(i % 3).encode())
                _add(tar, f"{key}.txt", f"caption {i}".encode())
                _add(tar, f"{key}.pyd", b"cos\nsystem\n(S'touch /tmp/gcl-pwned'\ntR.")
        paths.append(path)
    return paths


def test_patterns_lists_and_folders_list_the_same_samples(tmp_path):
    write_wds(tmp_path / "wds")
    by_folder = list_inputs(tmp_path / "wds")
    by_pattern = list_inputs(str(tmp_path / "wds" / "part-{000000..000001}.tar"))
    by_list = list_inputs(f"{tmp_path}/wds/part-000000.tar,{tmp_path}/wds/part-000001.tar")
    assert by_folder.kind == "webdataset" and len(by_folder.items) == 8
    assert [it.source for it in by_pattern.items] == [it.source for it in by_folder.items] == \
        [it.source for it in by_list.items]
    assert by_folder.items[0].source == "part-000000/sample0000" and by_folder.items[5].label == 5 % 3
    assert by_folder.class_names == ["0", "1", "2"]
    assert by_pattern.fingerprint() == by_folder.fingerprint()
    one = list_inputs(str(tmp_path / "wds" / "part-000000.tar"))
    assert len(one.items) == 4 and one.fingerprint() != by_folder.fingerprint()


def test_label_key_unlabelled_and_missing_labels(tmp_path):
    write_wds(tmp_path / "a", cls=False, i2d=True)
    assert list_inputs(tmp_path / "a").class_names is None  # no cls: unlabelled
    keyed = list_inputs(tmp_path / "a", label_key="label")
    assert [it.label for it in keyed.items] == [i % 3 for i in range(8)]
    texts = list_inputs(tmp_path / "a", label_key="caption")  # text labels: indices of sorted names
    assert texts.class_names == sorted(f"c{i}" for i in range(8))
    with pytest.raises(InputError, match="have no label"):
        list_inputs(tmp_path / "a", label_key="no_such_field")


def test_img2dataset_files_layout_is_not_read_as_classes(tmp_path):
    rng = np.random.default_rng(1)
    for shard in range(2):
        d = tmp_path / "i2d" / f"{shard:05d}"
        d.mkdir(parents=True)
        for j in range(3):
            key = f"{shard:05d}{j:04d}"
            (d / f"{key}.jpg").write_bytes(_jpeg(rng))
            (d / f"{key}.json").write_text(json.dumps({"label": j, "key": key}))
            (d / f"{key}.txt").write_text("a caption")
    (tmp_path / "i2d" / "00000_stats.json").write_text("{}")
    inputs = list_inputs(tmp_path / "i2d")
    assert inputs.kind == "img2dataset" and inputs.class_names is None and len(inputs.items) == 6
    assert all(it.label is None for it in inputs.items)
    assert [it.label for it in list_inputs(tmp_path / "i2d", label_key="label").items] == [0, 1, 2] * 2
    with pytest.raises(InputError, match="--label-key applies"):
        list_inputs(tmp_path / "i2d" / "00000", label_key="label")  # a plain folder


def _synth(inp, out, taef2_dir, *extra) -> dict:
    res = CliRunner().invoke(main, ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(inp),
                                    "--output", str(out), "--resolution", "32", "--views", "1", "--shard-size", "5",
                                    *map(str, extra)])
    assert res.exit_code == 0, res.output
    (mpath,) = Path(out).glob("*.manifest.json")
    return json.loads(mpath.read_text())


def _labels_by_key(out) -> dict:
    found = {}
    for tar in sorted(Path(out).glob("*.tar")):
        for s in read_shard(tar):
            meta = json.loads(s["json"])
            found[meta["source"]] = meta.get("label")
    return found


def test_img2dataset_tar_layout_end_to_end_with_a_bad_member(tmp_path, taef2_dir):
    (first, _second) = write_wds(tmp_path / "i2d", cls=False, i2d=True)
    with tarfile.open(first, "a") as tar:  # a member that is not an image: a counted skip
        _add(tar, "000000099.jpg", b"not a jpeg at all")
        _add(tar, "000000099.json", b'{"label": 0}')
    m = _synth(tmp_path / "i2d", tmp_path / "out", taef2_dir, "--label-key", "label", "--max-error-rate", "0.5")
    assert m["input"]["kind"] == "webdataset" and m["totals"]["samples"] == 8
    assert m["totals"]["errors"] == {"not_image": 1} and m["labelled"]
    assert m["name"].startswith("i2d_")
    labels = _labels_by_key(tmp_path / "out")
    assert labels == {f"{s:05d}/{i:09d}": i % 3 for s in range(2) for i in range(s * 4, s * 4 + 4)}
    assert not Path("/tmp/gcl-pwned").exists()


@pytest.fixture
def http_root(tmp_path):
    """A local http server over a folder (127.0.0.1, a free port, in a thread)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_input_matches_the_local_one(tmp_path, http_root, taef2_dir):
    root, url = http_root
    write_wds(root / "wds")
    local = _synth(root / "wds", tmp_path / "local", taef2_dir)
    remote = _synth(f"{url}/wds/part-{{000000..000001}}.tar", tmp_path / "remote", taef2_dir)
    assert remote["totals"]["samples"] == 8 and remote["input"]["fingerprint"] == local["input"]["fingerprint"]
    assert _labels_by_key(tmp_path / "remote") == _labels_by_key(tmp_path / "local")
    assert [s["sha256"] for s in remote["shards"]] == [s["sha256"] for s in local["shards"]]
    assert "127.0.0.1" not in json.dumps(remote)  # the host is not part of the data's identity
    res = CliRunner().invoke(main, ["run", "--no-progress", "--model", str(taef2_dir), "--input",
                                    f"{url}/wds/missing-000000.tar", "--output", str(tmp_path / "o3")])
    assert res.exit_code == 1 and "cannot read http://127.0.0.1" in res.output and "Traceback" not in res.output


def test_s3_webdataset_input_to_a_local_output(tmp_path, s3_endpoint, taef2_dir):
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("gcl-data")
    for path in write_wds(tmp_path / "wds", shards=3, per_shard=3):
        fs.put_file(str(path), f"gcl-data/laion/{path.name}")
    m = _synth("s3://gcl-data/laion/part-{000000..000002}.tar", tmp_path / "out", taef2_dir)
    assert m["totals"]["samples"] == 9 and m["totals"]["errors"] == {} and len(m["shards"]) == 2
    assert m["name"].startswith("laion_") and m["class_names"] == ["0", "1", "2"]
    assert _labels_by_key(tmp_path / "out") == {f"part-{i // 3:06d}/sample{i:04d}": i % 3 for i in range(9)}
    text = json.dumps(m)
    assert "testing-secret" not in text and s3_endpoint not in text
    folder = list_inputs("s3://gcl-data/laion/")  # a bucket folder of .tar
    assert folder.fingerprint() == list_inputs("s3://gcl-data/laion/part-{000000..000002}.tar").fingerprint()
    with pytest.raises(InputError, match="cannot read s3://gcl-data/nope/x.tar"):
        list_inputs("s3://gcl-data/nope/x.tar")


def test_pipe_inputs_and_missing_extras_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="pipe: inputs are not accepted"):
        list_inputs("pipe:cat x.tar")
    import fsspec

    def no_gcsfs(*_a, **_k):
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_gcsfs)
    with pytest.raises(InputError, match=r"gs:// inputs need an extra package: pip install 'gcl\[gcs\]'"):
        list_inputs("gs://bucket/part-000000.tar")


def test_a_server_that_never_answers_is_one_line_within_the_timeout(monkeypatch):
    """A server that accepts and then says nothing: listing stops at the read timeout, in one line."""
    import socket
    import time

    import gcl.webinputs as webinputs

    monkeypatch.setattr(webinputs, "CONNECT_TIMEOUT_S", 1)
    monkeypatch.setattr(webinputs, "READ_TIMEOUT_S", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    thread = threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(8)], daemon=True)
    thread.start()
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"cannot read http://127\.0\.0\.1:\d+/part-000000\.tar"):
        list_inputs(f"http://127.0.0.1:{listener.getsockname()[1]}/part-000000.tar")
    assert time.monotonic() - t0 < 20
    listener.close()
