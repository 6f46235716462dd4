"""gcl-synth merge: two shard sets made from the same input become one with K1 + K2 views per family."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcl.manifest import load_manifest, write_manifest
from gcl.shards import Sample, ShardWriter, parse_family, read_shard
from gcl.shardcheck import check_shard_set
from gcl.shardset import open_shard_set
from gcl.synth.cli import main

COMMON = ["--input", None, "--limit", 24, "--resolution", 32, "--shard-size", 12, "--batch-size", 12, "--residual"]


def _synth(out: Path, npz, model, *extra) -> Path:
    args = ["run", "--no-progress", "--model", model, *[npz if a is None else a for a in COMMON], "--output", out, "--name", out.name, *extra]
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (m,) = out.glob("*.manifest.json")
    return m


def _merge(*args):
    return CliRunner().invoke(main, ["merge", *[str(a) for a in args]])


def _families(manifest: Path) -> list:
    ss = open_shard_set(str(manifest))
    return [(raw["__key__"], *parse_family(raw)) for url in ss.urls for raw in read_shard(url)]


@pytest.fixture(scope="module")
def sets(tmp_path_factory, cifar_test_npz, taef2_dir):
    root = tmp_path_factory.mktemp("merge")
    a = _synth(root / "taef2_res", cifar_test_npz, taef2_dir, "--views", 2, "--recipe", "noise(strength=0.5)")
    b = _synth(root / "taef2_res025", cifar_test_npz, taef2_dir, "--views", 1, "--recipe", "noise(strength=0.25)")
    return root, a, b


def test_merged_families_hold_both_sets_views_in_order(sets, cifar_test_npz, taef2_dir):
    root, a, b = sets
    res = _merge(a, root / "taef2_res025", "--output", root / "mixed", "--name", "mixed")  # a manifest, a folder
    assert res.exit_code == 0, res.output
    merged = root / "mixed" / "mixed.manifest.json"
    fa, fb, fm = _families(a), _families(b), _families(merged)
    assert len(fm) == len(fa) == 24
    for (ka, ia, _, la), (kb, ib, _, lb), (km, im, meta, lm) in zip(fa, fb, fm):
        assert km == ka == kb and lm == la == lb
        assert sorted(im) == ["orig", "view0", "view1", "view2"]
        assert im["orig"] == ia["orig"] and im["view0"] == ia["view0"] and im["view1"] == ia["view1"]
        assert im["view2"] == ib["view0"]
        assert [v["set"] for v in meta["views"]] == ["taef2_res", "taef2_res", "taef2_res025"]
        assert [v["view"] for v in meta["views"]] == [0, 1, 2]
    m, ma, mb = load_manifest(merged), load_manifest(a), load_manifest(b)
    assert m["views"] == 3 and m["input"] == ma["input"] and m["resolution"] == 32
    assert [s["name"] for s in m["merged_from"]] == ["taef2_res", "taef2_res025"]
    assert [s["recipe"] for s in m["merged_from"]] == [ma["recipe"], mb["recipe"]]
    assert m["cost"]["flops_per_image"] == ma["cost"]["flops_per_image"] + mb["cost"]["flops_per_image"]
    assert str(root) not in merged.read_text() and "/tmp" not in merged.read_text()  # no local paths
    ss = open_shard_set(str(merged))
    assert ss.num_views == 3 and ss.counts == [12, 12] and not check_shard_set(ss)  # sha256, counts, K all hold
    # existing output: refused without --overwrite, replaced with it (same bytes: merging is deterministic)
    before = {p.name: p.read_bytes() for p in (root / "mixed").glob("*.tar")}
    res = _merge(a, b, "--output", root / "mixed", "--name", "mixed")
    assert res.exit_code != 0 and "already exists; pass --overwrite" in res.output
    assert _merge(a, b, "--output", root / "mixed", "--name", "mixed", "--overwrite").exit_code == 0
    assert {p.name: p.read_bytes() for p in (root / "mixed").glob("*.tar")} == before


def test_sets_of_other_images_resolution_or_order_are_refused(sets, tmp_path, cifar_test_npz, taef2_dir):
    root, a, b = sets
    fewer = _synth(tmp_path / "fewer", cifar_test_npz, taef2_dir, "--views", 1, "--limit", 12)
    res = _merge(a, fewer, "--output", tmp_path / "m1", "--name", "m")
    assert res.exit_code == 1 and "differ in input images" in res.output and "Traceback" not in res.output
    bigger = _synth(tmp_path / "bigger", cifar_test_npz, taef2_dir, "--views", 1, "--resolution", 64)
    res = _merge(a, bigger, "--output", tmp_path / "m2", "--name", "m")
    assert res.exit_code == 1 and "differ in resolution: 64 vs 32" in res.output
    # the same images, two of them swapped: a valid set (its manifest matches its bytes), in another order
    swapped = _reordered_copy(b, tmp_path / "swapped")
    res = _merge(a, swapped, "--output", tmp_path / "m3", "--name", "m")
    assert res.exit_code == 1 and "different images or a different order" in res.output
    assert not (tmp_path / "m3" / "m.manifest.json").exists()  # no manifest: nothing claims a merged set
    assert "at least two" in _merge(a, "--output", tmp_path / "m4", "--name", "m").output
    # writing over a source would destroy it while it is read: refused, the source untouched
    before = {p.name: p.read_bytes() for p in a.parent.glob("*.tar")}
    res = _merge(a, b, "--output", a.parent, "--name", a.parent.name, "--overwrite")
    assert res.exit_code == 1 and "is the folder of" in res.output
    assert {p.name: p.read_bytes() for p in a.parent.glob("*.tar")} == before and a.exists()


def test_a_damaged_source_is_refused_before_anything_is_written(sets, tmp_path):
    root, a, b = sets
    damaged = tmp_path / "damaged"
    shutil.copytree(b.parent, damaged)
    shard = sorted(damaged.glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 0xFF  # one flipped byte: the manifest's sha256 no longer holds
    shard.write_bytes(bytes(data))
    res = _merge(a, damaged / b.name, "--output", tmp_path / "m", "--name", "m")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert shard.name in res.output and "fail the manifest's claims" in res.output
    assert "--no-verify" not in res.output  # gcl-train's flag: a merge has no way round the check
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())


def test_a_set_twice_a_name_out_of_output_and_a_sources_folder_are_refused(sets, tmp_path):
    root, a, b = sets
    other_spelling = a.parent.parent / ".." / a.parent.parent.name / a.parent.name  # the folder, spelled anew
    copy = root / "manifests" / f"{tmp_path.name}.json"  # a manifest copy beside the set naming the same shards
    write_manifest(load_manifest(a), copy, a.parent)
    for twice in ([a, a], [a, other_spelling], [a, copy]):
        res = _merge(*twice, "--output", tmp_path / "m", "--name", "m")
        assert res.exit_code == 1 and "are the same shard set" in res.output, res.output
    for name in ("../escaped", "/abs", "..", ".hidden"):
        res = _merge(a, b, "--output", tmp_path / "m", "--name", name)
        assert res.exit_code == 1 and "a shard-set name is a plain file-name prefix" in res.output, res.output
    assert not list(tmp_path.glob("escaped*")) and not (tmp_path / "m").exists()
    res = _merge(a, b, "--output", b.parent, "--name", "m")  # a new name, but a source's folder
    assert res.exit_code == 1 and "is the folder of" in res.output
    assert sorted(p.name for p in b.parent.glob("*.manifest.json")) == [b.name]  # still one manifest: verify works


def test_overwrite_replaces_only_an_earlier_merge_of_the_same_name(sets, tmp_path, cifar_test_npz, taef2_dir):
    root, a, b = sets
    foreign = tmp_path / "out"
    shutil.copytree(a.parent, foreign)  # a set that gcl-synth run made, named like the merge
    for p in foreign.iterdir():
        p.rename(foreign / p.name.replace(a.parent.name, "m"))
    before = {p.name: p.read_bytes() for p in foreign.iterdir() if p.name != ".gcl-synth.lock"}
    res = _merge(a, b, "--output", foreign, "--name", "m", "--overwrite")
    assert res.exit_code == 1 and "made by gcl-synth run" in res.output and "only an earlier merge" in res.output
    (foreign / "m.owner.json").unlink()  # an older set without a marker: someone else's too
    res = _merge(a, b, "--output", foreign, "--name", "m", "--overwrite")
    assert res.exit_code == 1 and "no owner marker" in res.output
    kept = {p.name: p.read_bytes() for p in foreign.iterdir() if p.name != ".gcl-synth.lock"}
    assert kept == {k: v for k, v in before.items() if k != "m.owner.json"}
    ours = tmp_path / "ours"
    assert _merge(a, b, "--output", ours, "--name", "m").exit_code == 0
    assert json.loads((ours / "m.owner.json").read_text()) == {"command": "gcl-synth merge"}
    assert _merge(a, b, "--output", ours, "--name", "m", "--overwrite").exit_code == 0  # its own: replaced
    args = ["run", "--no-progress", "--model", taef2_dir, *[cifar_test_npz if x is None else x for x in COMMON],
            "--output", ours, "--name", "m", "--overwrite"]
    res = CliRunner().invoke(main, [str(x) for x in args])  # nor does gcl-synth run replace the merge's set
    assert res.exit_code == 1 and "made by gcl-synth merge" in res.output and "replaces only sets it planned" in res.output
    assert json.loads((ours / "m.owner.json").read_text()) == {"command": "gcl-synth merge"}


@pytest.mark.parametrize("planted", ["m.manifest.json", "m-000001.tar", "m.owner.json", ".gcl-synth.lock"])
def test_a_link_planted_in_the_merge_output_is_refused_and_its_target_kept(sets, tmp_path, planted):
    root, a, b = sets
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.write_text("precious\n")
    (out / planted).symlink_to(victim)
    if planted != "m.owner.json":
        (out / "m.owner.json").write_text(json.dumps({"command": "gcl-synth merge"}))
    res = _merge(a, b, "--output", out, "--name", "m", "--overwrite")
    assert res.exit_code == 1 and "is a symbolic link" in res.output and "Traceback" not in res.output, res.output
    assert victim.read_text() == "precious\n"


def _reordered_copy(manifest: Path, out: Path) -> Path:
    data = json.loads(manifest.read_text())
    ss = open_shard_set(str(manifest))
    out.mkdir()
    shards = []
    for i, (url, entry) in enumerate(zip(ss.urls, data["shards"])):
        raws = list(read_shard(url))
        if i == 0:
            raws[0], raws[1] = raws[1], raws[0]
        w = ShardWriter(out / entry["url"])
        for raw in raws:
            images, meta, label = parse_family(raw)
            w.write(Sample(raw["__key__"], images, meta, label, data["image_format"]))
        size, sha = w.close()
        shards.append({**entry, "bytes": size, "sha256": sha})
    return write_manifest({**data, "shards": shards}, out / manifest.name, out)


def test_a_study_makes_the_sets_a_merged_set_needs_then_merges_them(tmp_path, cifar_test_npz, taef2_dir):
    import yaml

    from gcl.eval.study.runner import PlannedRun, prepare_shards
    from gcl.eval.study.config import load_study
    from gcl.eval.study.runs import shard_set_ready

    plain = {"generator": "taesd", "model": str(taef2_dir), "input": str(cifar_test_npz), "limit": 12, "views": 1,
             "resolution": 32, "shard_size": 12, "batch_size": 12, "device": "cpu", "residual": True}
    study_file = tmp_path / "study" / "study.yaml"
    study_file.parent.mkdir()
    study_file.write_text(yaml.safe_dump({
        "name": "merged", "seeds": [0], "control": "ctrl", "output": str(tmp_path / "out"),
        "eval": {"bank": f"{cifar_test_npz}[12:100]", "test": f"{cifar_test_npz}[100:200]"},  # held out of a, b
        "shard_sets": {"mix": {"merge": ["a", "b"]}, "a": dict(plain, recipe="noise(strength=0.5)"),
                       "b": dict(plain, recipe="noise(strength=0.25)")},
        "arms": {"ctrl": {"shards": "a", "gen_prob": 0}, "mixed": {"shards": "mix", "gen_prob": 0.5}}}))
    study = load_study(study_file)
    todo = [PlannedRun("mixed", 0, "train")]
    said = []
    prepare_shards(study, list(study.arms), todo, True, said.append)
    assert said[1].startswith('  shard set a config: {"batch_size": 12') and said[2].startswith("  gcl-synth run --config=")
    assert said[7].startswith("  gcl-synth merge --output=")
    assert [line for line in said if not line.startswith("  ")] == [
                    f"would synthesize shard set a -> {study.shard_dir('a')}",
                    f"would synthesize shard set b -> {study.shard_dir('b')}",
                    f"would merge shard sets a, b -> {study.shard_dir('mix')}"]
    said.clear()
    manifests = prepare_shards(study, list(study.arms), todo, False, said.append)
    made = [line.split()[0:4] for line in said if not line.startswith("  ")]
    assert made == [["synthesize", "shard", "set", "a"], ["synthesize", "shard", "set", "b"],
                    ["merge", "shard", "sets", "a,"]]
    assert manifests["mix"]["views"] == 2 and [s["name"] for s in manifests["mix"]["merged_from"]] == ["a", "b"]
    assert all(shard_set_ready(study, name) for name in ("a", "b", "mix"))
    said.clear()
    prepare_shards(study, list(study.arms), todo, False, said.append)
    assert said == []  # everything ready: nothing is made again
