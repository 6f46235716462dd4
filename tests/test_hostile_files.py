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
    assert "lin.yaml is not a plain YAML recipe" in hostile.one_line_error(result)
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
from gcl.eval.study_runs import run_logged
from gcl.eval.study import _exit_on_sigterm
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
