"""Progress and time left while a study runs.

A study spends minutes to hours inside gcl-synth and gcl-train subprocesses. While one works, a
heartbeat prints one plain line every HEARTBEAT_SECONDS (terminals and log files alike) from what
the tools write anyway: the shard stats files gcl-synth commits one per shard, and gcl-train's
run.json (steps per epoch) and last.ckpt (its global step, saved at least every epoch).

Time left for runs that have not started is estimated from the runs measured so far (seconds per
unit of training work: epochs x views per image, the same images in every arm of a study), so the
study's total is known once the first training has made progress.
"""

from __future__ import annotations

import json
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

HEARTBEAT_SECONDS = 30.0


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def views_per_image(recipe: dict) -> int:
    """Views each image contributes per step: the members listed, else family_views, else a pair."""
    members = recipe.get("members")
    if isinstance(members, str):
        members = [m for m in members.split(",") if m.strip()]
    if members:
        return len(members)
    return int(recipe.get("family_views") or 2)


def training_work(recipe: dict) -> float:
    return float(recipe.get("epochs") or 1) * views_per_image(recipe)


def synthesis_progress(folder: Path, options: dict) -> tuple[int, int | None]:
    """(shards committed, shards planned or None) of a shard set gcl-synth is writing."""
    done = len(list(folder.glob("*.stats.json")))
    for plan in folder.glob("*plan.json"):  # gcl-synth's own count, once it has planned
        try:
            return done, int(json.loads(plan.read_text())["num_shards"])
        except (OSError, ValueError, KeyError, TypeError):
            break
    limit = options.get("limit")
    if not limit or options.get("per_class"):  # per_class: fewer images than the limit, counted by the plan
        return done, None
        return done, None
    return done, math.ceil(int(limit) / int(options.get("shard_size") or 1000))


def training_progress(run_dir: Path) -> tuple[int, int | None]:
    """(steps done, steps planned or None) of a gcl-train run folder."""
    try:
        info = json.loads((run_dir / "run.json").read_text())
        total = int(info["epochs"]) * int(info["steps_per_epoch"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0, None
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return 0, total
    import torch

    try:
        step = int(torch.load(ckpt, map_location="cpu", weights_only=True).get("global_step", 0))
    except Exception:  # noqa: BLE001 - a checkpoint being replaced right now: next heartbeat
        step = 0
    return step, total


class Countdown:
    """Time left of one step (a synthesis, a training run) from its progress counts. Counts move in
    jumps (a shard, an epoch's checkpoint), so the rate is taken between the first and the latest
    change seen (leaving start-up out once there are two) and counted down since the latest one."""

    def __init__(self, start: float):
        self.start = start
        self.first: tuple[float, int] | None = None  # (time, count) when progress was first seen
        self.latest: tuple[float, int] | None = None  # (time, count) at the latest change

    def left(self, done: int, total: int | None, now: float) -> float | None:
        if not total or not done:
            return None
        if self.latest is None or done != self.latest[1]:
            self.latest = (now, done)
            self.first = self.first or self.latest
        (t0, d0), (t1, d1) = self.first, self.latest
        per_unit = (t1 - t0) / (d1 - d0) if d1 > d0 else (t1 - self.start) / d1
        return max(0.0, (total - d1) * per_unit - (now - t1))


class StudyClock:
    """Elapsed time and time left for one sitting of a study: `runs` are (arm, merged recipe) in order."""

    def __init__(self, runs: list[tuple[str, dict]], log=print, now=time.monotonic):
        self.log, self.now = log, now
        self.work = [training_work(recipe) for _, recipe in runs]
        self.started = now()
        self.done_runs = 0
        self.measured_seconds = 0.0  # wall seconds of finished runs (training + evaluation)
        self.measured_work = 0.0
        self.current: tuple[float, float, float] | None = None  # (work, start, seconds left) of the run in hand

    def seconds_per_work(self) -> float | None:
        if self.measured_work:
            return self.measured_seconds / self.measured_work
        if self.current and self.current[2] is not None:
            work, start, left = self.current
            return (self.now() - start + left) / work
        return None

    def study_left(self) -> float | None:
        rate = self.seconds_per_work()
        if rate is None:
            return None
        later = sum(self.work[self.done_runs + (1 if self.current else 0):]) * rate
        return later + (self.current[2] if self.current and self.current[2] is not None else 0.0)

    def study_text(self) -> str:
        left = self.study_left()
        runs = len(self.work)
        if left is None:
            return f"study: {clock_text(self.now() - self.started)} elapsed, {runs - self.done_runs} run(s) to go " \
                   "(time left is estimated once the first training progresses)"
        return f"study: {clock_text(self.now() - self.started)} elapsed, about {clock_text(left)} left"

    @contextmanager
    def heartbeat(self, label: str, probe, unit: str, run_work: float | None = None):
        """Print `label`'s progress now and every HEARTBEAT_SECONDS until the block ends."""
        start = self.now()
        stop = threading.Event()
        countdown = Countdown(start)

        def beat():
            done, total = probe()
            now = self.now()
            elapsed = now - start
            left = countdown.left(done, total, now)
            if run_work is not None:
                self.current = (run_work, start, left)
            part = f"{done}/{total} {unit}" if total else f"{done} {unit}"
            eta = f"about {clock_text(left)} left" if left is not None else "estimating time left"
            self.log(f"  {label}: {part}, {clock_text(elapsed)} elapsed, {eta}; {self.study_text()}")

        def loop():
            while not stop.wait(HEARTBEAT_SECONDS):
                beat()

        beat()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            if run_work is not None:
                self.current = (run_work, start, 0.0)  # training is over; its evaluation is short

    def synthesis(self, name: str, folder: Path, options: dict):
        return self.heartbeat(f"synthesis of {name}", lambda: synthesis_progress(folder, options), "shards")

    def training(self, step: str, run_name: str, run_dir: Path, recipe: dict):
        return self.heartbeat(f"{step} {run_name} training", lambda: training_progress(run_dir), "steps",
                              training_work(recipe))

    def finish(self, failed: int = 0) -> None:
        failures = f", {failed} failed" if failed else ""
        self.log(f"sitting done in {clock_text(self.now() - self.started)}: {self.done_runs} run(s) trained{failures}")

    def run_finished(self, seconds: float) -> None:
        self.measured_seconds += seconds
        self.measured_work += self.work[self.done_runs]
        self.done_runs += 1
        self.current = None
        self.log(f"  {self.done_runs}/{len(self.work)} run(s) done; {self.study_text()}")
