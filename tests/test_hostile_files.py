"""Files people share (recipes, study files, run folders) run nothing and fail in one line; a
stopped study runner ends its children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile


def test_a_recipe_cannot_run_a_shell_command(tmp_path, monkeypatch):
    """`shards_base: pipe:CMD` in a recipe reached webdataset's shell; only a typed option may."""
    monkeypatch.chdir(tmp_path)
    manifest = hostile.shard_set(tmp_path / "set")
    for key, value in (("shards_base", "pipe:touch PWNED; cat"), ("shards_base", "file:/etc"),
                       ("shards", "pipe:touch PWNED; cat x.tar")):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(json.dumps({key: value}))
        result = hostile.train_shards(manifest, tmp_path, "--recipe", recipe, "--no-verify")
        error = hostile.one_line_error(result)
        assert "refusing" in error and "r.yaml" in error and "command line" in error, error
        assert not (tmp_path / "PWNED").exists() and not (tmp_path / "run").exists()


def test_a_python_tag_in_a_linear_recipe_is_one_line(tmp_path):
    from gcl.eval.cli import main

    recipe = tmp_path / "lin.yaml"
    recipe.write_text('linear: !!python/object/apply:os.system ["touch PWNED"]\n')
    data = hostile.npz(tmp_path / "d.npz")
    result = hostile.invoke(main, ["linear", "--raw-pixels", "--eval-train", data, "--eval-test", data,
                                   "--linear-recipe", recipe, "--output", tmp_path / "o"])
    assert "lin.yaml is not valid plain YAML" in hostile.one_line_error(result)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", ["[]", "3", '"text"', "[" * 100_000])
def test_compare_shows_a_run_whose_run_json_is_not_an_object(tmp_path, content):
    from gcl.eval.cli import main

    run = tmp_path / "odd"
    run.mkdir()
    (run / "run.json").write_text(content)
    result = hostile.invoke(main, ["compare", run, "--output", tmp_path])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "| odd " in result.output


_PARENT = """
import sys
from pathlib import Path
from gcl.eval.study.runs import run_logged
from gcl.eval.study.runner import _exit_on_sigterm
import signal
signal.signal(signal.SIGTERM, _exit_on_sigterm)
child = [sys.executable, "-c", "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(120)"]
run_logged(child, Path(%r))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is gone too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_study_runner_ends_its_training_child(tmp_path, stop):
    pid_file, log = tmp_path / "child.pid", tmp_path / "child.log"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT % (str(pid_file), str(log))])
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(stop)
    parent.wait(60)
    deadline = time.time() + 45
    while _alive(child) and time.time() < deadline:
        time.sleep(0.2)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, f"the child outlived a runner stopped by {stop.name}"


def _plant(cache_dir: Path, data: Path, width: int, forge_metadata: bool) -> None:
    """Cache files where gcl-eval looks for them, holding 10 one-hot 'features' per label: a kNN on
    them is 100% whatever the encoder really does."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from gcl.eval.features import data_fingerprint, raw_pixel_encoder
    from gcl.labelled import load_labelled

    ds = load_labelled(str(data))
    feats = torch.zeros(len(ds.labels), width)
    feats[torch.arange(len(ds.labels)), torch.from_numpy(ds.labels)] = 1.0
    enc = raw_pixel_encoder()
    meta = {"encoder_key": enc.key, "data": data_fingerprint(ds.images, ds.labels, full=True)} if forge_metadata else {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({"features": feats, "labels": torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))},
              str(cache_dir / f"{enc.id}-{data_fingerprint(ds.images, ds.labels)}.safetensors"), metadata=meta)


@pytest.mark.parametrize("width, forge_metadata", [(10, False), (8 * 8 * 3, True)])
def test_a_planted_feature_cache_does_not_decide_the_score(tmp_path, width, forge_metadata):
    from gcl.eval.cli import main

    train = hostile.npz(tmp_path / "train.npz", n=60)
    test = tmp_path / "test.npz"
    hostile.npz(test, n=30)
    import numpy as np

    with np.load(test) as z:  # a test set whose labels the pixels do not predict
        np.savez(test, images=z["images"], labels=np.roll(z["labels"], 1), class_names=z["class_names"])
    args = ["knn", "--raw-pixels", "--no-baselines", "--eval-train", train, "--eval-test", test, "--k", 3,
            "--output", tmp_path / "o"]
    honest = hostile.invoke(main, args + ["--no-cache"])
    assert honest.exit_code == 0 and "top-1 100.00%" not in honest.output, honest.output
    cache = tmp_path / "features"
    _plant(cache, train, width, forge_metadata)
    _plant(cache, test, width, forge_metadata)
    planted = hostile.invoke(main, args + ["--cache-dir", cache])
    assert planted.exit_code == 0 and "ignoring feature cache" in planted.output, planted.output
    score = [ln for ln in planted.output.splitlines() if "top-1" in ln]
    assert score == [ln for ln in honest.output.splitlines() if "top-1" in ln]
    again = hostile.invoke(main, args + ["--cache-dir", cache])  # the replaced cache is used, and agrees
    assert "(cache)" in again.output and "ignoring" not in again.output and score[0] in again.output


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_given_to_resume_runs_nothing_and_is_one_line(tmp_path, monkeypatch):
    import pickle

    monkeypatch.chdir(tmp_path)
    manifest = hostile.shard_set(tmp_path / "set")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"state_dict": _Payload()}))
    from gcl.train.cli import main
    from gcl.train.config import load_config

    cfg = load_config(None, {"shards": (str(manifest),), "gen_prob": 0.0, "output": str(tmp_path / "run")})
    (tmp_path / "run" / "run.json").write_text(json.dumps({"config": cfg.to_dict(), "status": "stopped"}))
    result = hostile.invoke(main, ["--output", tmp_path / "run", "--resume"])
    assert "last.ckpt is not a gcl-train checkpoint" in hostile.one_line_error(result)
    assert not (tmp_path / "PWNED").exists()


def test_one_trainer_per_run_folder_and_ctrl_c_says_interrupted(tmp_path):
    """A second trainer (a rerun study's --resume) in a folder being trained is refused in one line;
    Ctrl-C leaves run.json saying 'interrupted', not 'running', and keeps last.ckpt."""
    manifest = hostile.shard_set(tmp_path / "set")
    run = tmp_path / "run"
    args = ["--shards", manifest, "--gen-prob", 0, "--epochs", 10_000, "--batch-size", 2, "--num-workers", 0,
            "--accelerator", "cpu", "--output", run, "--ckpt-every-steps", 1]
    # the child's output goes to a file that a failure shows (a pipe read only at the end shows nothing
    # when the child hangs, and a full one would block it)
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen([sys.executable, "-m", "gcl.train.cli", *map(str, args)], stdout=sink,
                                 stderr=subprocess.STDOUT, preexec_fn=hostile.sigint_default)
    try:
        deadline = time.time() + 600  # a safety net, not a speed claim: a loaded 2-core machine needs minutes to import Lightning
        while not (run / "checkpoints" / "last.ckpt").exists():
            assert first.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        from gcl.train.cli import main

        second = hostile.invoke(main, [*args, "--resume"])
        error = hostile.one_line_error(second)
        assert "is being written by another gcl-train run" in error and f"pid {first.pid}" in error, error
        first.send_signal(signal.SIGINT)
        try:
            first.wait(120)  # ~10 s measured on a loaded machine
        except subprocess.TimeoutExpired:
            pytest.fail(f"gcl-train still runs 120 s after Ctrl-C; its output ends:\n{log.read_text()[-2000:]}")
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGINT, log.read_text()[-2000:]
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: stopped by SIGINT"), log.read_text()[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["global_step"] >= 1
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_the_documented_shard_readers_decode_only_gcls_members(tmp_path, monkeypatch):
    """docs/shards.md's reading examples (the core's reader and plain webdataset) run on a shard
    that also carries .pickle / .pyd / .pth members whose unpickling would create a file."""
    import pickle
    import re

    from gcl.shards import shard_name

    class Planted:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    payload = pickle.dumps(Planted())
    folder = tmp_path / "out" / "c10"
    folder.mkdir(parents=True)
    for index in range(20):
        members = []
        for name, data in hostile.family(index):
            key = f"k{index}".encode()
            members.append((key + name[4:].replace(b".png", b".jpg"), data))
        members += [(f"k{index}.x.pickle".encode(), payload), (f"k{index}.x.pyd".encode(), payload),
                    (f"k{index}.x.pth".encode(), payload)]
        (folder / shard_name("cifar10_train_taesd_k2_r64", index)).write_bytes(hostile.tar_bytes(members))
    monkeypatch.chdir(tmp_path)
    page = (Path(__file__).resolve().parents[1] / "docs" / "shards.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", page, re.S)
    assert any("webdataset" in s for s in snippets) and any("gcl.shards" in s for s in snippets)
    scope: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "docs/shards.md", "exec"), scope)  # noqa: S102 - the page's own example code
        if "ds" in scope:
            samples = list(scope["ds"])
            assert len(samples) == 20
            assert all(isinstance(s[m], bytes) for s in samples for m in ("x.pickle", "x.pyd", "x.pth"))
    assert not (tmp_path / "PWNED").exists()
