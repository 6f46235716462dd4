"""The README's main command on a fresh machine: no ../shared, CIFAR-10 in $GCL_HOME, and that copy's
pixels differ from the copy the published reference was made from. The run must succeed and say
which copy the reference came from, never claim a match; a re-run with nothing left says so."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gcl.synth.cli import main as synth_main
from gcl.synth.reference import compare_to_reference

REPO = Path(__file__).resolve().parents[1]
REFERENCE_COPY = "CIFAR-10 train, the copy the reference was made from"


def _readme_main_command() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return shlex.split(re.search(r"\.venv/bin/gcl-synth run ([^\n`]+)", readme).group(1))


def _npz(path: Path, images, labels, names, description: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"description": np.array(description)} if description else {}
    np.savez(path, images=images, labels=labels, class_names=names, **extra)
    return path


def _with(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(option) + 1] = value
    return args


def test_readme_command_with_another_copy_of_cifar10_exits_0_and_names_the_reference_copy(
        tmp_path, monkeypatch, cifar_test_npz, taef2_dir):
    with np.load(cifar_test_npz) as z:
        images, labels, names = z["images"][:16], z["labels"][:16], z["class_names"]
    original = _npz(tmp_path / "published" / "cifar10_train.npz", images, labels, names, REFERENCE_COPY)
    home = tmp_path / "home"  # a fresh $GCL_HOME: the same images one grey level brighter, the weights
    _npz(home / "data" / "cifar10_train.npz", np.minimum(images.astype(np.int16) + 1, 255).astype(np.uint8), labels, names)
    (home / "models").mkdir()
    (home / "models" / "taef2").symlink_to(taef2_dir)
    monkeypatch.setenv("GCL_HOME", str(home))
    monkeypatch.setattr("gcl.synth.defaults.shared_dirs", lambda: [])  # no ../shared on this machine

    readme = _with(_readme_main_command(), "--limit", "16")
    runner = CliRunner()
    publish = _with(readme, "--output", str(tmp_path / "ref"))
    at = publish.index("--reference")
    del publish[at:at + 2]
    ref = runner.invoke(synth_main, ["run", *publish, "--input", str(original), "--manifest", str(tmp_path / "published.json")])
    assert ref.exit_code == 0, ref.output
    reference = str(tmp_path / "published.json")

    args = _with(_with(readme, "--output", str(tmp_path / "out")), "--reference", reference)
    res = runner.invoke(synth_main, ["run", *args])
    assert res.exit_code == 0, res.output
    assert "NOT COMPARED: the reference was made from another copy of cifar10_train.npz" in res.stdout
    assert f"reference input: {REFERENCE_COPY}" in res.stdout
    assert "MATCH" not in res.stdout and "byte-identical" not in res.stdout

    again = runner.invoke(synth_main, ["run", *args])  # everything committed: no bar, no rate
    assert again.exit_code == 0, again.output
    assert "nothing left: all 1 shards already committed" in again.stdout
    assert "img/s]" not in again.stderr

    # The same input with other images is still a mismatch.
    doctored = (tmp_path / "out").glob("*.manifest.json")
    import json

    mine = json.loads(next(doctored).read_text())
    same_input = json.loads(json.dumps(mine))
    for shard in same_input["shards"]:
        shard["sha256"] = "0" * 64
        shard["pixel_sketch"] = {m: [v + 5 for v in vals] for m, vals in shard["pixel_sketch"].items()}
    verdict, lines = compare_to_reference(mine, same_input)
    assert verdict is False and "images differ" in " ".join(lines)


def _manifest(device="cpu", isa=None, sha="a" * 64, shift=0.0) -> dict:
    return {"device_type": device, "cpu_capability": isa, "input": {"name": "x.npz", "count": 4, "fingerprint": "f"},
            "shards": [{"index": 0, "sha256": sha, "pixel_sketch": {"orig": [10.0 + shift]}}]}


def test_other_cpu_vector_instructions_are_named_not_library_versions():
    verdict, lines = compare_to_reference(_manifest(isa="AVX2", sha="b" * 64, shift=0.01), _manifest(isa="AVX512"))
    assert verdict is True
    assert "other CPU vector instructions (AVX2 here, AVX512 for the reference)" in lines[0]
    assert "library versions" not in lines[0] and "made on cpu (AVX2), reference on cpu (AVX512)" in lines[0]
    verdict, lines = compare_to_reference(_manifest(isa="AVX2", sha="b" * 64), _manifest(isa="AVX2"))
    assert verdict is True and "check library versions" in lines[0]
    verdict, lines = compare_to_reference(_manifest(isa="AVX2", sha="b" * 64), _manifest(isa=None))
    assert "AVX2 vs AVX-512" in lines[0]


def test_another_input_name_is_still_a_mismatch():
    other = _manifest()
    other["input"] = {"name": "mine.npz", "count": 4, "fingerprint": "g"}
    verdict, lines = compare_to_reference(other, _manifest())
    assert verdict is False and lines == ["different options than the reference: inputs"]
