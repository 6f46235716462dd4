"""Every crafted member or field, through every gcl command that reads it: a counted skip (per
sample) or one line naming the file (per file), never a traceback, a hang or a huge allocation.
A new crafted case is one entry in tests/hostile.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import hostile

SHARD_COMMANDS = {
    "synth-verify": hostile.synth_verify,
    "eval-inspect": hostile.eval_inspect,
    "eval-knn": hostile.eval_knn,
    "train": hostile.train_shards,
    "train-no-verify": lambda m, tmp: hostile.train_shards(m, tmp, "--no-verify"),
}
NPZ_COMMANDS = {"eval-knn": hostile.eval_knn, "train-input": hostile.train_input, "synth-run": hostile.synth_run}


def _skipped(result, tmp: Path) -> int:
    """Samples the command says it skipped (its log line, or run.json for gcl-train)."""
    run_json = tmp / "run" / "run.json"
    if run_json.is_file():
        return int(json.loads(run_json.read_text()).get("skipped_samples", 0))
    found = re.findall(r"skipped (\d+)", result.output)
    return sum(map(int, found))


def assert_line_or_counted_skip(result, tmp: Path, names: list[str]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output[-3000:]
    if result.exit_code == 0:
        assert _skipped(result, tmp) >= 1, result.output[-3000:]
        return
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    bad = [ln for ln in result.output.splitlines() if ln.startswith("BAD ")]  # gcl-synth verify: one per problem
    assert len(errors) + bool(bad) == 1, result.output[-3000:]
    for line in errors + bad:
        assert any(name in line for name in names), line


@pytest.mark.parametrize("command", list(SHARD_COMMANDS))
@pytest.mark.parametrize("case", [*hostile.MEMBER_CASES, "size-field"])
def test_crafted_member(tmp_path, case, command):
    manifest = hostile.shard_set(tmp_path / "set", case)
    result = SHARD_COMMANDS[command](manifest, tmp_path)
    assert_line_or_counted_skip(result, tmp_path, [manifest.name, "hostile-000000.tar"])


@pytest.mark.parametrize("command", list(SHARD_COMMANDS))
@pytest.mark.parametrize("case", list(hostile.MANIFEST_CASES))
def test_crafted_manifest_field(tmp_path, case, command):
    manifest = hostile.crafted_manifest(tmp_path / "set", case)
    result = SHARD_COMMANDS[command](manifest, tmp_path)
    assert result.exit_code != 0, result.output[-2000:]  # a manifest that lies is never half-trusted
    assert_line_or_counted_skip(result, tmp_path, [manifest.name])


@pytest.mark.parametrize("command", list(NPZ_COMMANDS))
@pytest.mark.parametrize("case", hostile.NPZ_CASES)
def test_crafted_npz(tmp_path, case, command):
    data = hostile.npz(tmp_path / "data.npz", case)
    result = NPZ_COMMANDS[command](data, tmp_path)
    assert result.exit_code != 0, result.output[-2000:]  # images or labels gcl cannot read as they are
    assert_line_or_counted_skip(result, tmp_path, [data.name])


def test_a_clean_set_passes_every_command(tmp_path):
    """The same helpers on an uncrafted set succeed: the failures above come from the crafted bytes."""
    manifest = hostile.shard_set(tmp_path / "set")
    for name, command in SHARD_COMMANDS.items():
        out = tmp_path / name
        out.mkdir()
        result = command(manifest, out)
        assert result.exit_code == 0 and _skipped(result, out) == 0, (name, result.output[-2000:])
    data = hostile.npz(tmp_path / "data.npz")
    for name, command in NPZ_COMMANDS.items():
        out = tmp_path / f"npz-{name}"
        out.mkdir()
        result = command(data, out)
        assert result.exit_code == 0, (name, result.output[-2000:])
