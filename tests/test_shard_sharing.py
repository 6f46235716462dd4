"""Shard sets you can share: identity by content (no local paths), one writer per output folder,
a manifest's claims checked against its shards, no decompression bomb through a shard, a
published reference a run can be compared with, and full / read-only disks as one-line errors."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gcl.io import sha256_file
from gcl.manifest import load_manifest, write_manifest
from gcl.shards import Sample, ShardReadError, ShardWriter, decode_image, encode_image, shard_name
from gcl.shardcheck import require_valid
from gcl.shardset import ShardSetError, open_shard_set
from gcl.synth.lock import OutputLock

GCL_SYNTH = [sys.executable, "-m", "gcl.synth.cli", "run", "--no-progress"]


def _synth_args(model, npz, out, *extra):
    return GCL_SYNTH + ["--model", str(model), "--input", str(npz), "--limit", "12", "--resolution", "32",
                        "--shard-size", "6", "--batch-size", "6", "--output", str(out), *map(str, extra)]


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), **kw)


def _one_line_error(res) -> str:
    assert res.returncode != 0 and "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    return res.stderr.strip().splitlines()[-1]


def test_moved_weights_give_identical_shards_without_local_paths(tmp_path, cifar_test_npz, taef2_dir):
    hashes = []
    for where in ("a/deep/folder", "b"):
        model = tmp_path / where / "taef2"
        shutil.copytree(taef2_dir, model)
        out = tmp_path / f"out-{where.split('/')[0]}"
        res = _run(_synth_args(model, cifar_test_npz, out))
        assert res.returncode == 0, res.stderr[-2000:]
        hashes.append({p.name: sha256_file(p) for p in sorted(out.glob("*.tar"))})
        for artefact in list(out.glob("*.tar")) + list(out.glob("*.json")):
            blob = artefact.read_bytes()
            assert str(tmp_path).encode() not in blob and str(taef2_dir).encode() not in blob, artefact.name
        m = load_manifest(next(out.glob("*.manifest.json")))
        assert m["generator"]["id"] == "taesd:taef2" and len(m["generator"]["weights_sha256"]) == 64
        assert m["input"]["name"] == "cifar10_test.npz"
    assert hashes[0] == hashes[1] and len(hashes[0]) == 2


def test_a_held_folder_is_refused_naming_the_holder(tmp_path, cifar_test_npz, taef2_dir):
    out = tmp_path / "o"
    with OutputLock(out):
        res = _run(_synth_args(taef2_dir, cifar_test_npz, out))
        line = _one_line_error(res)
        assert "being written by another gcl-synth run" in line and f"pid {os.getpid()}" in line
        assert not list(out.glob("*.tar")) and not (out / "plan.json").exists()
    res = _run(_synth_args(taef2_dir, cifar_test_npz, out))  # released (or its holder died): taken over
    assert res.returncode == 0, res.stderr[-2000:]


def test_two_concurrent_runs_leave_one_consistent_verified_set(tmp_path, cifar_test_npz, taef2_dir):
    out = tmp_path / "o"
    procs = [subprocess.Popen(_synth_args(taef2_dir, cifar_test_npz, out, "--seed", seed, "--overwrite"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, HF_HUB_OFFLINE="1")) for seed in (0, 1)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    winners = [i for i, (rc, _) in enumerate(results) if rc == 0]
    for rc, err in results:
        assert rc == 0 or "being written by another gcl-synth run" in err, err[-2000:]
    assert winners, results
    manifest = next(out.glob("*.manifest.json"))
    m = load_manifest(manifest)
    assert m["seed"] in {(0, 1)[i] for i in winners}
    require_valid(open_shard_set(str(manifest)))  # every shard matches the manifest's claims
    for shard in out.glob("*.tar"):  # and every family was made with the seed the manifest claims
        from gcl.shards import read_shard

        assert {json.loads(raw["json"])["seed"] for raw in read_shard(shard)} == {m["seed"]}
    assert not list(out.glob("*.tmp-*"))


def _tiny_set(folder: Path, n=6, views=2, labelled=True, name="toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w = ShardWriter(folder / shard_name(name, 0))
    for i in range(n):
        imgs = {"orig": encode_image(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "png", 95)}
        for v in range(views):
            imgs[f"view{v}"] = encode_image(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "png", 95)
        w.write(Sample(f"k{i:03d}", imgs, {"i": i}, i % 3 if labelled else None, "png"))
    size, digest = w.close()
    manifest = {"name": name, "views": views, "labelled": labelled, "class_names": ["a", "b", "c"] if labelled else None,
                "shards": [{"url": shard_name(name, 0), "index": 0, "samples": n, "bytes": size, "sha256": digest}]}
    return write_manifest(manifest, folder / f"{name}.manifest.json", folder)


def _claim(manifest: Path, **changes) -> Path:
    data = json.loads(manifest.read_text())
    shard_changes = {k: changes.pop(k) for k in list(changes) if k in ("samples", "bytes", "sha256")}
    data.update(changes)
    data["shards"][0].update(shard_changes)
    out = manifest.with_name("claim.manifest.json")
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("change, message", [
    ({"views": 3}, "2 generated views, manifest says K=3"),
    ({"samples": 7}, "6 samples, manifest says 7"),
    ({"bytes": 123}, "size mismatch"),
    ({"sha256": "0" * 64}, "sha256 mismatch"),
])
def test_manifest_claims_are_checked_against_the_shards(tmp_path, change, message):
    manifest = _tiny_set(tmp_path / "s")
    require_valid(open_shard_set(str(manifest)))
    with pytest.raises(ShardSetError, match=message):
        require_valid(open_shard_set(str(_claim(manifest, **change))))


def test_unlabelled_shards_claiming_labels_and_missing_originals(tmp_path):
    manifest = _tiny_set(tmp_path / "u", labelled=False)
    with pytest.raises(ShardSetError, match="no label, manifest says the set is labelled"):
        require_valid(open_shard_set(str(_claim(manifest, labelled=True))))


def test_claim_check_cost_is_one_read(tmp_path):
    """The check reads each shard once: hashing and parsing together (the figure is in the README)."""
    manifest = _tiny_set(tmp_path / "s", n=50)
    shard_set = open_shard_set(str(manifest))
    reads = []
    real_open = open

    def counting_open(path, *a, **k):
        if str(path).endswith(".tar"):
            reads.append(path)
        return real_open(path, *a, **k)

    import builtins

    builtins.open, saved = counting_open, builtins.open
    try:
        require_valid(shard_set)
    finally:
        builtins.open = saved
    assert len(reads) == 1


def test_a_bomb_member_is_refused_before_decoding(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8001, 8001)).save(buf, format="PNG")  # 64 Mpx of zeros: ~60 KB of PNG
    with pytest.raises(ShardReadError, match="over the .* px cap"):
        decode_image(buf.getvalue())


def test_bomb_in_shards_is_a_counted_skip_in_eval(tmp_path):
    from PIL import Image

    from gcl.labelled import load_labelled

    folder = tmp_path / "b"
    folder.mkdir()
    bomb = io.BytesIO()
    Image.new("L", (8001, 8001)).save(bomb, format="PNG")
    good = encode_image(np.zeros((16, 16, 3), np.uint8), "png", 95)
    w = ShardWriter(folder / shard_name("b", 0))
    for i, img in enumerate([good, bomb.getvalue(), good, b"not an image"]):
        w.write(Sample(f"k{i}", {"orig": img}, {}, 0, "png"))
    w.close()
    data = load_labelled(str(folder / shard_name("b", 0)))
    assert len(data.labels) == 2 and data.skipped == 2


def test_reference_match_and_mismatch_leave_the_reference_untouched(tmp_path, cifar_test_npz, taef2_dir):
    ref_out = tmp_path / "ref"
    assert _run(_synth_args(taef2_dir, cifar_test_npz, ref_out)).returncode == 0
    reference = tmp_path / "published.json"
    shutil.copy(next(ref_out.glob("*.manifest.json")), reference)
    before = reference.read_bytes()
    res = _run(_synth_args(taef2_dir, cifar_test_npz, tmp_path / "again", "--reference", reference))
    assert res.returncode == 0 and "MATCH: 2/2 shards byte-identical" in res.stdout, res.stdout + res.stderr
    res = _run(_synth_args(taef2_dir, cifar_test_npz, tmp_path / "seed1", "--seed", 1, "--reference", reference))
    assert "different options than the reference: seed" in res.stdout and "do not match" in _one_line_error(res)
    # Same options, other pixels (the bytes a GPU would give): the sketch tells near from far.
    from gcl.synth.reference import compare_to_reference

    near, far = json.loads(before), json.loads(before)
    for shard in near["shards"]:
        shard["sha256"] = "0" * 64
        shard["pixel_sketch"] = {m: [v + 0.5 for v in vals] for m, vals in shard["pixel_sketch"].items()}
    assert compare_to_reference(near, json.loads(before))[0]
    seed1 = load_manifest(next((tmp_path / "seed1").glob("*.manifest.json")))
    for a, b in zip(far["shards"], seed1["shards"]):
        a["sha256"], a["pixel_sketch"] = b["sha256"], b["pixel_sketch"]
    ok, lines = compare_to_reference(far, json.loads(before))
    assert not ok and "images differ" in " ".join(lines)
    assert reference.read_bytes() == before


def _limited(limit_bytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))  # writes past it: EFBIG
    return apply


def test_full_disk_is_one_line_and_keeps_committed_shards(tmp_path, cifar_test_npz, taef2_dir):
    out = tmp_path / "o"
    res = _run(_synth_args(taef2_dir, cifar_test_npz, out, "--image-format", "png"))
    assert res.returncode == 0
    shard_bytes = max(p.stat().st_size for p in out.glob("*.tar"))
    full = tmp_path / "full"
    res = _run(_synth_args(taef2_dir, cifar_test_npz, full, "--image-format", "png"), preexec_fn=_limited(shard_bytes - 1))
    line = _one_line_error(res)
    assert "cannot write" in line and "too large" in line.lower() and "committed shards are kept" in line
    assert not list(full.glob("*.tmp-*"))
    committed = sorted(full.glob("*.stats.json"))
    for stats in committed:  # whatever was committed is intact
        st = json.loads(stats.read_text())
        assert sha256_file(full / st["shard"]) == st["sha256"]


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only filesystem (tmpfs mounted ro): the real EROFS, which root cannot bypass."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_output_is_one_line(read_only_folder, cifar_test_npz, taef2_dir):
    res = _run(_synth_args(taef2_dir, cifar_test_npz, read_only_folder / "out"))
    line = _one_line_error(res)
    assert "cannot write" in line and "Read-only file system" in line


def _train(args):
    from click.testing import CliRunner

    from gcl.train.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_tampered_shard_stops_training_with_one_line(tmp_path):
    manifest = _tiny_set(tmp_path / "s", n=8)
    tar = tmp_path / "s" / shard_name("toy", 0)
    data = bytearray(tar.read_bytes())
    data[700] ^= 0x01  # one flipped bit inside the first image
    tar.write_bytes(bytes(data))
    res = _train(["--shards", manifest, "--gen-prob", 0, "--epochs", 1, "--batch-size", 4, "--output", tmp_path / "run"])
    assert res.exit_code != 0 and "sha256 mismatch" in res.output and "--no-verify" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_on_read_only_output_is_one_line(read_only_folder, tmp_path):
    manifest = _tiny_set(tmp_path / "s", n=8)
    res = _train(["--shards", manifest, "--gen-prob", 0, "--epochs", 1, "--batch-size", 4, "--num-workers", 0,
                  "--output", read_only_folder / "run"])
    assert res.exit_code != 0 and "cannot write" in res.output and "Read-only file system" in res.output
    assert "Traceback" not in res.output


REPO = Path(__file__).resolve().parents[1]
DEMO_REFERENCE = REPO / "manifests" / "cifar10-taef2-demo.json"


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", ".", ":!studies"], cwd=REPO, capture_output=True,
                          text=True).stdout


def _readme_commands(prefix: str) -> list[list[str]]:
    """The README's shell commands that start with `prefix`, as argument lists (after the prefix)."""
    import re
    import shlex

    readme = (REPO / "README.md").read_text()
    return [shlex.split(m) for m in re.findall(re.escape(prefix) + r" ([^\n`]+)", readme)]


def _matches_the_reference(res) -> bool:
    """The demo's verdict as the README states it: every shard byte-identical to the published
    reference, or (another kind of CPU or device) its pixel sketch within the tolerance."""
    import re

    found = re.search(r": MATCH: (\d+)/(\d+) shards byte-identical to the reference, (\d+) more within", res.stdout)
    if res.returncode != 0 or not found:
        return False
    identical, total, close = map(int, found.groups())
    return total > 0 and identical + close == total


@pytest.fixture(scope="module")
def readme_demo(tmp_path_factory):
    """The README's main job, run as written (only --output moved to a temp folder)."""
    args = _readme_commands(".venv/bin/gcl-synth run")[0]
    assert "--reference" in args and "--manifest" not in args
    out = tmp_path_factory.mktemp("readme") / "demo"
    readme_output, args[args.index("--output") + 1] = args[args.index("--output") + 1], str(out)
    before = _git_status()
    res = _run([*GCL_SYNTH, *args], cwd=REPO)
    return {"args": args, "out": out, "readme_output": readme_output, "res": res, "before": before,
            "after": _git_status()}


@pytest.mark.slow
def test_readme_main_command_reproduces_the_published_demo_and_leaves_the_tree_clean(readme_demo):
    """It reports a match with manifests/cifar10-taef2-demo.json (bytes, or pixel sketches on another
    kind of CPU) and writes nothing under the repository."""
    res = readme_demo["res"]
    assert _matches_the_reference(res), res.stdout[-1500:] + res.stderr[-1500:]
    assert readme_demo["after"] == readme_demo["before"]


@pytest.mark.slow
def test_demo_verdict_accepts_a_portable_match_and_refuses_other_images(readme_demo, tmp_path):
    """Rerun the demo (its shards are committed, so only the comparison runs) against doctored copies
    of the published reference: other bytes with sketches 0.5 grey levels away (what another CPU
    kind gives) still match; sketches 5 levels away are other images and fail the command."""
    args, reference = list(readme_demo["args"]), json.loads(DEMO_REFERENCE.read_text())
    verdicts = {}
    for name, shift in (("portable", 0.5), ("other", 5.0)):
        doctored = json.loads(json.dumps(reference))
        for shard in doctored["shards"]:
            shard["sha256"] = "0" * 64
            shard["pixel_sketch"] = {m: [v + shift for v in vals] for m, vals in shard["pixel_sketch"].items()}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doctored))
        args[args.index("--reference") + 1] = str(path)
        verdicts[name] = _run([*GCL_SYNTH, *args], cwd=REPO)
    portable, other = verdicts["portable"], verdicts["other"]
    assert "MATCH: 0/1 shards byte-identical to the reference, 1 more within" in portable.stdout, portable.stdout
    assert _matches_the_reference(portable)
    assert "MISMATCH" in other.stdout and "images differ" in other.stdout, other.stdout
    assert not _matches_the_reference(other) and "do not match the reference" in _one_line_error(other)
    # A reference made from another copy of CIFAR-10 (the official pixels, say): exit 0, named, no match claimed.
    copy = json.loads(json.dumps(reference))
    copy["input"].update(fingerprint="0" * 64 + "/limit=1000", description="CIFAR-10 train, another copy")
    (tmp_path / "copy.json").write_text(json.dumps(copy))
    args[args.index("--reference") + 1] = str(tmp_path / "copy.json")
    res = _run([*GCL_SYNTH, *args], cwd=REPO)
    assert res.returncode == 0 and "NOT COMPARED: the reference was made from another copy" in res.stdout, res.stdout
    assert "reference input: CIFAR-10 train, another copy" in res.stdout and "MATCH:" not in res.stdout


@pytest.mark.slow
def test_readme_next_steps_train_and_score_the_demo_on_a_cpu(readme_demo, tmp_path, monkeypatch):
    """The README's CPU training example and its kNN command, as written, on the demo shards just
    made (the README's out/cifar10-taef2 is the temp folder here), cut to 1 epoch and small eval sets.
    It trains on the run's own manifest: on another kind of CPU the published sha256 do not hold."""
    from click.testing import CliRunner

    from gcl.eval.cli import main as gcl_eval

    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository root
    train_args, = _readme_commands(".venv/bin/gcl-train")
    knn_args, = _readme_commands(".venv/bin/gcl-eval knn")
    run = tmp_path / "run"
    main_output = readme_demo["readme_output"]
    shards = train_args[train_args.index("--shards") + 1]
    assert shards.startswith(main_output + "/"), (shards, main_output)
    for option, value in (("--output", run), ("--epochs", 1), ("--eval-limit", 300),
                          ("--shards", str(readme_demo["out"]) + shards[len(main_output):])):
        train_args[train_args.index(option) + 1] = str(value)
    res = _train(train_args)
    assert res.exit_code == 0, res.output[-2000:]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["gen_prob"] == 0.5, record
    assert "knn_top1" in (run / "metrics.csv").read_text()
    for option, value in (("--ckpt", run), ("--eval-limit", 300)):
        knn_args[knn_args.index(option) + 1] = str(value)
    res = CliRunner().invoke(gcl_eval, ["knn", *knn_args])
    assert res.exit_code == 0 and "top-1" in res.output and "chance" in res.output, res.output[-2000:]
    assert "baselines on the same images: raw pixels" in res.output
    assert list((run / "eval").glob("*.json")) and _git_status() == readme_demo["before"]
