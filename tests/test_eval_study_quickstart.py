"""The quickstart study (studies/quickstart): the whole loop in one command, its results under
out/, and the progress and time-left lines a study prints while its tools work."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gcl.eval.study import progress as study_progress  # noqa: E402
from gcl.eval.cli import main  # noqa: E402
from gcl.eval.study.config import load_study  # noqa: E402
from gcl.eval.study.progress import Countdown, StudyClock, clock_text, synthesis_progress, training_progress  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "studies" / "quickstart" / "study.yaml"


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout


def test_the_readme_shows_the_quickstart_right_after_the_set_up_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", readme, flags=re.S | re.M)
    assert blocks[2].strip() == ".venv/bin/gcl-eval study studies/quickstart/study.yaml"


def test_quickstart_is_one_seed_of_three_arms_with_its_results_under_out(monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(QUICKSTART)
    assert study.seeds == [0] and study.control == "hand3"
    assert [study.merged[a].get("members") for a in ("hand2", "hand3", "taef2_extra")] == \
        [None, ["orig", "orig", "orig"], ["orig", "orig", "gen"]]
    for folder in (study.folder, study.output):  # results and runs: ignored by git, never committed
        probe = folder / "results.md"
        assert subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO).returncode == 0, folder
    assert "One seed proves nothing" in study.note and "studies/cifar10-gen-views" in study.note


def test_a_results_folder_and_note_must_be_texts(tmp_path):
    from gcl.eval.study.config import StudyError

    data = yaml.safe_load(QUICKSTART.read_text())
    data["note"] = ["not", "a", "text"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StudyError, match="'note' must be a text"):
        load_study(path)


def test_progress_probes_read_what_the_tools_write(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        (shards / f"s-{i:06d}.stats.json").write_text("{}")
    assert synthesis_progress(shards, {"limit": 2000, "shard_size": 250}) == (3, 8)
    assert synthesis_progress(shards, {}) == (3, None)
    run = tmp_path / "run"
    assert training_progress(run) == (0, None)
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text('{"epochs": 5, "steps_per_epoch": 10, "status": "running"}')
    assert training_progress(run) == (0, 50)
    torch.save({"global_step": 20, "epoch": 1}, run / "checkpoints" / "last.ckpt")
    assert training_progress(run) == (20, 50)


def test_time_left_for_the_run_and_the_study(monkeypatch):
    """Two runs: 2 views x 6 epochs, then 3 views x 6 epochs. 20 of 50 steps after 40 s: 60 s left in
    the first run, whose 100 s make the second (1.5x the work) 150 s: 3:30 left in all."""
    monkeypatch.setattr(study_progress, "HEARTBEAT_SECONDS", 0.01)
    now = [0.0]
    lines: list[str] = []
    clock = StudyClock([("hand2", {"epochs": 6}), ("hand3", {"epochs": 6, "members": ["orig"] * 3})], lines.append,
                       now=lambda: now[0])
    answers = iter([(0, 50)])
    with clock.heartbeat("[1/2] hand2-s0 training", lambda: next(answers, (20, 50)), "steps", 12.0):
        assert "0/50 steps" in lines[0] and "estimating time left" in lines[0] and "2 run(s) to go" in lines[0]
        now[0] = 40.0
        deadline = time.time() + 10
        while not any("20/50 steps" in ln for ln in lines) and time.time() < deadline:
            time.sleep(0.01)
    assert lines[-1].startswith("  [1/2] hand2-s0 training: 20/50 steps, 0:40 elapsed, about 1:00 left; study: ")
    assert lines[-1].endswith("0:40 elapsed, about 3:30 left")
    now[0] = 100.0
    clock.run_finished(100.0)
    assert lines[-1] == "  1/2 run(s) done; study: 1:40 elapsed, about 2:30 left"
    now[0] = 250.0
    clock.finish()
    assert lines[-1] == "sitting done in 4:10: 1 run(s) trained"
    assert clock_text(3725) == "1:02:05"


def test_countdown_leaves_start_up_out_and_counts_down_between_epochs():
    """Epochs of 12 steps checkpointed every 60 s after 30 s of start-up: the first epoch's rate
    includes the start-up; from the second change on, 5 s a step, counted down between checkpoints."""
    countdown = Countdown(start=0.0)
    seen = [countdown.left(done, 72, now) for now, done in
            [(30, 0), (90, 12), (120, 12), (150, 24), (180, 24), (210, 36), (270, 48)]]
    assert seen == [None, 450.0, 420.0, 240.0, 210.0, 180.0, 120.0]
    assert countdown.left(72, 72, 390.0) == 0.0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # six tool start-ups (torch, Lightning): minutes each on a loaded 2-core machine
def test_quickstart_runs_the_loop_at_a_smaller_size_and_leaves_the_tree_clean(tmp_path, monkeypatch):
    """The quickstart study as shipped, shrunk (96 images, 2 epochs, small eval sets) and pointed at a
    temp folder: it synthesizes, trains the three arms, scores them, writes results.md and
    results.png with the note, shows progress with time left, and changes nothing in the repository."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["results"] = data["output"] = str(tmp_path / "quickstart")
    data["shard_sets"]["taef2_res"].update(limit=96, shard_size=32)
    data["train"].update(epochs=2, batch_size=32)
    data["eval"].update(limit_bank=600, limit_test=300)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(study_progress, "HEARTBEAT_SECONDS", 1.0)  # tiny runs end in seconds
    before = _git_status()
    r = CliRunner().invoke(main, ["study", str(study_file)])
    assert r.exit_code == 0, r.output[-3000:]
    out = tmp_path / "quickstart"
    report = (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 10_000
    assert data["note"].strip() in report and data["note"].strip() in r.output
    rows = {ln.split("|")[1].strip(): ln.split("|") for ln in report.splitlines() if ln.startswith("| ") and "---" not in ln}
    for arm in ("hand2", "hand3", "taef2_extra"):
        assert rows[arm][2].strip() == "1" and float(rows[arm][3]) > 10.0, rows[arm]  # one seed, above chance
    header = [h.strip() for h in report.splitlines()[[ln.startswith("| arm |") for ln in report.splitlines()].index(True)].split("|")]
    delta = next(i for i, h in enumerate(header) if h.startswith("Δ") and "vs control" in h)
    assert rows["taef2_extra"][delta].strip().startswith(("+", "-"))  # its paired Δ against hand3
    assert "synthesis of taef2_res: 0/3 shards" in r.output
    assert re.search(r"\[1/3\] hand2-s0 training: \d+/\d+ steps, [\d:]+ elapsed, ", r.output)
    assert re.search(r"1/3 run\(s\) done; study: [\d:]+ elapsed, about [\d:]+ left", r.output)
    assert re.search(r"sitting done in [\d:]+: 3 run\(s\) trained\n", r.output)
    assert _git_status() == before
