"""gcl-synth run in an output folder it did not fill alone: a resumed run keeps a committed shard
only when it is this plan's (a planted one is made again), --name stays inside --output, and no
write goes through a link planted in the folder."""

import os
import shutil

from click.testing import CliRunner

from gcl.io import sha256_file
from gcl.synth.cli import main


def _run(*args):
    return CliRunner().invoke(main, ["run", "--no-progress", *[str(a) for a in args]])


def _common(npz, model):
    return ["--model", model, "--input", npz, "--limit", 8, "--resolution", 32, "--shard-size", 4, "--batch-size", 4,
            "--name", "s"]


def test_a_planted_or_changed_shard_is_made_again_when_a_run_resumes(tmp_path, cifar_test_npz, taef2_dir):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert _run(*_common(cifar_test_npz, taef2_dir), "--output", ours).exit_code == 0
    assert _run(*_common(cifar_test_npz, taef2_dir), "--output", theirs, "--seed", 9).exit_code == 0
    made = {p.name: sha256_file(p) for p in ours.glob("*.tar")}
    # seed 9's shard 0 with its own stats (size and sha256 hold) under the seed-0 plan, as a resume finds it
    for name in ("s-000000.tar", "s-000000.stats.json"):
        shutil.copy(theirs / name, ours / name)
    shard1 = bytearray((ours / "s-000001.tar").read_bytes())
    shard1[len(shard1) // 2] ^= 0x01  # and a changed byte in shard 1, whose stats stay
    (ours / "s-000001.tar").write_bytes(bytes(shard1))
    (ours / "s.manifest.json").unlink()
    res = _run(*_common(cifar_test_npz, taef2_dir), "--output", ours)
    assert res.exit_code == 0, res.output
    assert "shard 0 is made again" in res.output and "records seed 9, the plan 0" in res.output, res.output
    assert "shard 1 is made again" in res.output and "do not match its stats" in res.output
    assert {p.name: sha256_file(p) for p in ours.glob("*.tar")} == made
    verified = CliRunner().invoke(main, ["verify", str(ours)])
    assert verified.exit_code == 0 and "2/2 shards OK" in verified.output
    again = _run(*_common(cifar_test_npz, taef2_dir), "--output", ours)  # its own shards are kept as they are
    assert again.exit_code == 0 and "made again" not in again.output and "2 already done" in again.output


def test_a_name_cannot_leave_the_output_folder(tmp_path, cifar_test_npz, taef2_dir):
    args = [a for a in _common(cifar_test_npz, taef2_dir) if a != "s"][:-1]
    res = _run(*args, "--output", tmp_path / "out", "--name", "../escaped")
    assert res.exit_code == 1 and "a shard-set name is a plain file-name prefix" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not list(tmp_path.rglob("escaped*"))


def test_a_link_planted_in_the_output_folder_is_refused_and_its_target_kept(tmp_path, cifar_test_npz, taef2_dir):
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.write_text("precious\n")
    (out / f"plan.json.tmp-{os.getpid()}").symlink_to(victim)  # the temp name of this process's plan write
    res = _run(*_common(cifar_test_npz, taef2_dir), "--output", out)
    assert res.exit_code == 1 and "is a symbolic link" in res.output and "Traceback" not in res.output, res.output
    assert victim.read_text() == "precious\n"
    for leftover in out.iterdir():
        leftover.unlink()
    (out / "s-000001.stats.json").symlink_to(victim)
    res = _run(*_common(cifar_test_npz, taef2_dir), "--output", out)
    assert res.exit_code == 1 and "s-000001.stats.json is a symbolic link" in res.output, res.output
    assert victim.read_text() == "precious\n" and not (out / "s-000000.tar").exists()
