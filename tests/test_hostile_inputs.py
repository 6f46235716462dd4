"""Hostile and broken inputs, one behaviour each: a bounded resize, a manifest base that cannot
climb out, members that cannot take memory, npz images gcl would misread."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import hostile
from gcl.inputs import InputError, InputItem, list_inputs, load_rgb
from gcl.shards import ShardReadError, decode_image, iter_samples, read_shard
from gcl.shardset import ShardSetError, open_shard_set


def _strip_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_extreme_aspect_ratio_is_a_counted_skip_before_decoding(tmp_path):
    """A 250000 x 1 PNG is 0.4% of the pixel cap, but resizing its short side to 32 px would
    build a 32 x 8,000,000 image (~1 GB): refused from the header, as input and as shard member."""
    path = tmp_path / "strip.png"
    path.write_bytes(_strip_png(250_000, 1))
    arr, err = load_rgb(InputItem("strip.png", str(path)))
    assert arr is None and err == "extreme_aspect"
    with pytest.raises(ShardReadError, match="aspect cap"):
        decode_image(_strip_png(250_000, 1))
    ok = tmp_path / "wide.png"
    ok.write_bytes(_strip_png(100, 10))  # 10:1 panoramas still decode
    assert load_rgb(InputItem("wide.png", str(ok)))[0].shape == (10, 100, 3)


def test_a_manifest_base_leaves_its_folder_by_one_level_at_most(tmp_path):
    manifest = hostile.shard_set(tmp_path / "repo" / "out" / "set")
    copy = tmp_path / "repo" / "manifests" / "set.json"  # the copy gcl-synth --manifest writes
    copy.parent.mkdir(parents=True)
    data = json.loads(manifest.read_text())
    copy.write_text(json.dumps(dict(data, base="../out/set")))
    assert open_shard_set(str(copy)).total == hostile.FAMILIES
    for base in ("../../../../../../../..", "../../repo/out/set", "sub/../../../x"):
        copy.write_text(json.dumps(dict(data, base=base)))
        with pytest.raises(ShardSetError, match="one '..' at most"):
            open_shard_set(str(copy))


def test_an_oversize_member_is_read_past_and_only_its_sample_is_skipped():
    from gcl.tarstream import MAX_MEMBER_BYTES

    big = MAX_MEMBER_BYTES + 1
    members = hostile.family(0) + [(b"k001.orig.png", b"\0" * big), (b"k001.cls", b"1")] + hostile.family(2)
    samples = list(iter_samples(io.BytesIO(hostile.tar_bytes(members))))
    assert [s["__key__"] for s in samples] == ["k000", "k001", "k002"]
    assert "over the 256 MiB cap" in samples[1]["__problem__"] and "orig.png" not in samples[1]
    assert samples[2]["cls"] == b"2"


def test_a_lying_size_field_is_a_truncated_stream_not_an_allocation(tmp_path):
    members, lying = hostile.crafted_members("size-field")
    path = tmp_path / "lying.tar"
    path.write_bytes(hostile.tar_bytes(members, lying))  # a file: read(64 GiB) would allocate it
    with pytest.raises(ShardReadError, match="truncated"):
        list(read_shard(path))


@pytest.mark.parametrize("case, message", [
    ("float-images", "are float32, gcl reads uint8"),
    ("uint16-images", "are uint16, gcl reads uint8"),
    ("object-images", "cannot read"),
    ("string-labels", "'labels' must be 12 integers"),
    ("labels-past-names", "outside the 3 class_names"),
])
def test_npz_images_and_labels_are_checked_when_listed(tmp_path, case, message):
    path = hostile.npz(tmp_path / "d.npz", case)
    with pytest.raises(InputError, match=message):
        list_inputs(path)
    assert len(list_inputs(hostile.npz(tmp_path / "ok.npz")).items) == 12


def _loader(manifest, **options):
    from gcl.train.config import load_config
    from gcl.train.data import build_train_loader

    cfg = load_config(None, {"shards": (str(manifest),), "gen_prob": 0.0, "batch_size": 2, "num_workers": 0,
                             "verify": False, **options})
    return build_train_loader(cfg, 1)[0]


def test_training_skips_only_the_bad_sample_keeps_reading_and_counts_every_epoch(tmp_path):
    """A non-UTF-8 name used to abandon the rest of its shard as one skip (16 steps saw 9 of 16
    families); now only its sample is skipped, and run.json's count covers every epoch."""
    from gcl.train.epochs import LoaderPosition

    members = []
    for i in range(16):
        fam = hostile.family(i)
        if i == 5:  # every member of this family has a non-UTF-8 key
            fam = [(b"k\xff" + name[4:], data) for name, data in fam]
        if i == 9:
            fam = [(name, b"{not json") if name.endswith(b".json") else (name, data) for name, data in fam]
        members += fam
    loader = _loader(hostile.write_set(tmp_path / "s", hostile.tar_bytes(members), 16), max_steps_per_epoch=7)
    good = {f"k{i:03d}" for i in range(16) if i not in (5, 9)}
    for epoch in range(2):
        loader.start_epoch(LoaderPosition(epoch))
        keys = [k for batch in loader for k in batch["key"]]
        assert sorted(keys) == sorted(good)
    assert loader.skipped == 4  # 2 bad samples x 2 epochs


def test_a_skip_after_the_last_chunk_is_still_counted(tmp_path):
    """A corrupt shard tail read after a worker's last chunk used to be counted nowhere."""
    from gcl.train.epochs import CHUNK
    from gcl.train.epochs import LoaderPosition

    members = [m for i in range(CHUNK) for m in hostile.family(i)] + [(b"k999.orig.png", b"x" * 600)]
    data = hostile.tar_bytes(members, lying_size=b"777777777777")  # the tail: a member cut short
    loader = _loader(hostile.write_set(tmp_path / "s", data, CHUNK + 2))
    loader.start_epoch(LoaderPosition(0))
    assert sum(len(batch["key"]) for batch in loader) == CHUNK + 2  # wraps into a second pass
    # the tail is read by both passes (the shuffle buffer reads ahead): counted both times, the
    # first pass's count arriving after its last chunk
    assert loader.skipped == 2
