"""The shard module's own tar reader agrees with Python's tarfile and rejects damaged streams."""

import io
import tarfile

import pytest

from gcl.shards import Sample, ShardReadError, ShardWriter, iter_samples, iter_tar_members, read_shard


def _tar(fmt, names):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i, name in enumerate(names):
            data = bytes(range(256)) * (i + 1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reader_matches_tarfile_including_long_names(fmt):
    long = "d/" + "x" * 130 + ".orig.jpg" if fmt != tarfile.USTAR_FORMAT else "a" * 90 + "/k.orig.jpg"
    raw = _tar(fmt, ["k1.orig.jpg", "k1.json", long])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    assert list(iter_tar_members(io.BytesIO(raw))) == expected


def test_reader_rejects_corrupt_header_and_truncation():
    raw = bytearray(_tar(tarfile.USTAR_FORMAT, ["a.orig.jpg", "a.json"]))
    bad = bytes(raw[:5]) + b"Z" + bytes(raw[6:])  # a flipped name byte breaks the header checksum
    with pytest.raises(ShardReadError, match="checksum"):
        list(iter_tar_members(io.BytesIO(bad)))
    with pytest.raises(ShardReadError, match="truncated"):
        list(iter_tar_members(io.BytesIO(bytes(raw[:700]))))


def test_writer_is_deterministic_and_groups_families(tmp_path):
    def write(path):
        w = ShardWriter(path)
        for i in range(3):
            w.write(Sample(f"key{i}", {"orig": b"o" * (i + 1), "view0": b"v", "view1": b"w"}, {"i": i}, label=i))
        return w.close()

    a, b = write(tmp_path / "a.tar"), write(tmp_path / "b.tar")
    assert a == b and (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    fams = list(read_shard(tmp_path / "a.tar"))
    assert [f["__key__"] for f in fams] == ["key0", "key1", "key2"]
    assert set(fams[2]) == {"__key__", "orig.jpg", "view0.jpg", "view1.jpg", "cls", "json"} and fams[2]["cls"] == b"2"
    assert not list(tmp_path.glob("*.tmp-*"))
    with open(tmp_path / "a.tar", "rb") as fh:
        assert [f["__key__"] for f in iter_samples(fh)] == ["key0", "key1", "key2"]


def test_reader_rejects_a_non_tar_stream():
    with pytest.raises(ShardReadError):
        list(iter_tar_members(io.BytesIO(b"not a tar at all, just some bytes" * 40)))
