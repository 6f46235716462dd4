"""The study's subprocess side: gcl-synth for shard sets, gcl-train for runs, and the state of a run
folder. Apps never import each other, so both tools run as `python -m gcl.<app>.cli` children of
the same interpreter; their output goes to a log file beside what they make.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from gcl.eval.study.config import MergeSet, Study, StudyError, SynthOptions
from gcl.io import open_nofollow, write_bytes_atomic, write_json_atomic
from gcl.manifest import ManifestError, load_manifest

SET_STATE = "study-shard-set.json"  # beside a shard set: the options it was made with
SYNTH_CONFIG = "study-synth-config.json"  # beside a shard set: what gcl-synth run --config reads
RUN_STATE = "study-run.json"  # in a run folder: the arm digest and each sitting's wall seconds
TAIL_LINES = 30  # lines of a failed tool's log kept in the failure record
CHILD_GRACE_S = 30  # a stopped child's time to finish a checkpoint write before SIGKILL
PR_SET_PDEATHSIG = 1  # prctl option: signal to receive when the parent dies


def _log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log, with this machine's folders shortened: a failure record is
    committed with the study and must not carry local absolute paths."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    for local, short in ((sys.prefix, "$PREFIX"), (os.getcwd() + os.sep, ""), (os.path.expanduser("~"), "~")):
        tail = tail.replace(local, short)
    return tail


def _last_error_line(tail: str) -> str:
    """The line a click tool prints for a user error ('Error: ...'), else the last line."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("Error:") or "Error:" in line:
            return line
    return lines[-1] if lines else "no output"


def _parent_death_signal():
    """A function for the child, between fork and exec, asking the kernel for SIGTERM when the study
    runner dies (even by SIGKILL), so a killed study never leaves a trainer writing into a run
    folder. Linux only (None elsewhere). prctl is looked up here, in the parent: the child runs
    nothing but the one C call (no import, no lock another thread might have held at fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    args = (ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(int(signal.SIGTERM)))
    return lambda: prctl(*args)


def run_logged(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run cmd with stdout+stderr appended to `log`; returns (exit code, wall seconds).

    The child ends with the runner: stopped (SIGTERM, Ctrl-C) it is asked to stop with SIGTERM
    and given CHILD_GRACE_S to save before SIGKILL; killed outright, the kernel ends it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open_nofollow(log, "a") as fh:  # train.log / synth.log: never appended through a planted link
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                 preexec_fn=_parent_death_signal())
        try:
            code = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(CHILD_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    return code, time.time() - t0


def synth_config(options: SynthOptions) -> dict:
    """A shard set's gcl-synth --config contents: the options the study file set, typed (the runner
    writes them as data for gcl-synth's own schema; no key or value becomes a flag)."""
    if not isinstance(options, SynthOptions):
        raise TypeError("synth_config takes SynthOptions (the parsed shard set), not a mapping")
    return options.given()


def synth_command(study: Study, set_name: str, scheduler: str | None = None) -> list[str]:
    """The exact gcl-synth call that makes a shard set (printed by --dry-run, run by make_shard_set):
    the runner's own flags only; a plain set's options are in its config file (SYNTH_CONFIG)."""
    folder, spec = study.shard_dir(set_name), study.synth[set_name]
    if isinstance(spec, MergeSet):
        return [sys.executable, "-m", "gcl.synth.cli", "merge", f"--output={folder}", f"--name={set_name}",
                "--overwrite", "--", *(str(study.manifest_path(s)) for s in spec.merge)]  # after --: never options
    return [sys.executable, "-m", "gcl.synth.cli", "run", f"--config={folder / SYNTH_CONFIG}", f"--output={folder}",
            f"--name={set_name}", "--no-progress", *([f"--scheduler={scheduler}"] if scheduler else [])]


def train_command(study: Study, arm: str, seed: int, recipe: Path, manifest: Path, resume: bool) -> list[str]:
    """The exact gcl-train call of one sitting: every argument is the runner's (the arm's settings
    are in the recipe file it writes), each value in its flag's argument (a study output folder
    named like a flag stays a folder)."""
    return [sys.executable, "-m", "gcl.train.cli", f"--recipe={recipe}", f"--shards={manifest}",
            f"--output={study.run_dir(arm, seed)}", f"--seed={seed}"] + (["--resume"] if resume else [])


def shard_set_ready(study: Study, set_name: str) -> bool:
    """A complete manifest made with the options the study file gives now."""
    state = study.shard_dir(set_name) / SET_STATE
    try:
        made_with = json.loads(state.read_text())["options"]
        manifest = load_manifest(study.manifest_path(set_name))
    except (FileNotFoundError, KeyError, json.JSONDecodeError, ManifestError):
        return False
    return made_with == study.set_options(set_name) and bool(manifest.get("complete", True))


def make_shard_set(study: Study, set_name: str, log=print, scheduler: str | None = None) -> Path:
    """Run (or resume) gcl-synth for one shard set (on a dask scheduler only when the command line
    names one), or gcl-synth merge for a merged one (its sources must be ready: Study.build_order);
    a failure is a one-line StudyError."""
    folder = study.shard_dir(set_name)
    spec = study.synth[set_name]
    if isinstance(spec, MergeSet):
        unready = [s for s in spec.merge if not shard_set_ready(study, s)]
        if unready:
            raise StudyError(f"shard set {set_name} merges {', '.join(unready)}, which are not made yet")
        log(f"merge shard sets {', '.join(spec.merge)} -> {folder} (log: {folder / 'synth.log'})")
    else:
        log(f"synthesize shard set {set_name} -> {folder} (log: {folder / 'synth.log'})")
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / SYNTH_CONFIG, synth_config(spec))
    code, seconds = run_logged(synth_command(study, set_name, scheduler), folder / "synth.log")
    if code != 0 or not study.manifest_path(set_name).is_file():
        reason = _last_error_line(_log_tail(folder / "synth.log"))
        raise StudyError(f"shard set {set_name}: gcl-synth failed ({reason}); see {folder / 'synth.log'}")
    write_json_atomic(folder / SET_STATE, {"options": study.set_options(set_name)})
    log(f"  shard set {set_name} ready ({seconds:.0f} s)")
    return study.manifest_path(set_name)


def check_same_inputs(manifests: dict[str, dict]) -> None:
    """Paired arms must see the same images in the same order for a given seed: every shard set
    must come from the same input (fingerprint includes --limit) and have the same shard layout
    (samples per shard), because gcl-train shuffles shards and samples by (seed, epoch)."""
    seen: dict[tuple, str] = {}
    for name, m in sorted(manifests.items()):
        layout = (str((m.get("input") or {}).get("fingerprint")), tuple(int(s["samples"]) for s in m["shards"]))
        seen.setdefault(layout, name)
    if len(seen) > 1:
        names = ", ".join(seen.values())
        raise StudyError(f"shard sets {names} differ in input images or shard layout (input fingerprint, --limit, "
                         "--shard-size): arms would not see the same data order; make them from the same input")


def run_state(study: Study, arm: str, seed: int) -> dict:
    """{'digest', 'sittings': [{'seconds', 'code', 'resume'}]} of a run folder, or {} when absent."""
    try:
        state = json.loads((study.run_dir(arm, seed) / RUN_STATE).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return state if isinstance(state, dict) and isinstance(state.get("sittings", []), list) else {}


def foreign_folder(study: Study, arm: str, seed: int) -> str:
    """Why the run folder of (arm, seed) is not this study's to write into or delete ('' when it is):
    a study touches only folders carrying its own RUN_STATE marker (markers written before the
    marker named its study count as its own)."""
    folder = study.run_dir(arm, seed)
    if not folder.is_dir() or not any(folder.iterdir()):
        return ""
    state = run_state(study, arm, seed)
    if not state or state.get("study", study.name) != study.name:
        return f"{folder} holds files this study did not make (no {RUN_STATE} of study {study.name})"
    return ""


def train_status(run_dir: Path) -> str:
    """'finished' (gcl-train says so), 'partial' (a last.ckpt to resume), or 'none'."""
    try:
        if json.loads((run_dir / "run.json").read_text()).get("status") == "finished":
            return "finished"
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    return "partial" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "none"


def check_recipes(paths: list[Path], flops: bool = False) -> tuple[dict[Path, str], dict[Path, int]]:
    """gcl-train's own verdict on each merged recipe (python -m gcl.train.check): ({path: error},
    and with flops=True {path: the run's training FLOPs per training image} of the accepted ones)."""
    cmd = [sys.executable, "-m", "gcl.train.check", *(["--flops"] if flops else []), *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    errors, measured = {}, {}
    for path in paths:
        prefix = f"error {path}: "
        errors.update({path: ln[len(prefix):] for ln in proc.stdout.splitlines() if ln.startswith(prefix)})
        for ln in proc.stdout.splitlines():
            head, _, value = ln.rpartition(" train_flops_per_image=")
            if head == f"ok {path}" and value.isdigit():
                measured[path] = int(value)
    if proc.returncode != 0 and not errors:
        errors = {paths[0]: f"gcl.train.check failed: {_last_error_line(proc.stderr)}"}
    return errors, measured


def measure_train_flops(study: Study) -> dict[str, int]:
    """Each arm's training FLOPs per training image (whole run), measured by gcl-train on its merged recipe
    ({} when the check cannot run: the report then leaves the compute columns empty)."""
    paths = write_arm_recipes(study, list(study.arms))
    errors, measured = check_recipes(list(paths), flops=True)
    return {paths[p]: n for p, n in measured.items() if p not in errors}


def write_arm_recipes(study: Study, arms: list[str]) -> dict[Path, str]:
    """Each arm's merged recipe as out/studies/NAME/recipes/ARM.yaml, for gcl.train.check: {path: arm}."""
    return {write_recipe(study, arm, study.output / "recipes" / f"{arm}.yaml"): arm for arm in arms}


def write_recipe(study: Study, arm: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a study killed while writing must not leave a half recipe for the resumed run to read
    write_bytes_atomic(path, (f"# arm {arm} of study {study.name}: written by gcl-eval study, do not edit\n"
                              + yaml.safe_dump(study.merged[arm], sort_keys=True)).encode())
    return path


def train_run(study: Study, arm: str, seed: int, manifest: Path, resume: bool) -> tuple[int, float, str]:
    """One gcl-train sitting for (arm, seed); returns (exit code, wall seconds, log tail)."""
    out = study.run_dir(arm, seed)
    why = foreign_folder(study, arm, seed)
    if why:
        raise StudyError(f"{why}; move it away, the study will not write into it")
    state = run_state(study, arm, seed)
    if state.get("digest") != study.digest(arm):  # a folder left by an earlier config that never checkpointed
        state = {"digest": study.digest(arm), "sittings": []}
    state["study"] = study.name
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_STATE, state)  # the marker and digest are on disk before anything else
    recipe = write_recipe(study, arm, out / "recipe.yaml")
    cmd = train_command(study, arm, seed, recipe, manifest, resume)
    sitting = {"seconds": 0.0, "code": None, "resume": resume}  # code None: running, or killed outright
    state["sittings"].append(sitting)
    with SittingClock(out / RUN_STATE, state, sitting) as clock:
        code, _ = run_logged(cmd, out / "train.log")
        clock.code = code
    return code, sitting["seconds"], _log_tail(out / "train.log")


class SittingClock:
    """Keeps a training sitting's wall seconds on disk while it runs: written at the start, every
    TICK_S, and at the end (Ctrl-C and SIGTERM included). A runner killed outright (SIGKILL, an OOM
    kill, a stopped machine) runs no cleanup, so without the ticks that sitting's time, and the
    sitting itself, would be missing from the run's cost."""

    TICK_S = 30.0

    def __init__(self, path: Path, state: dict, sitting: dict):
        self.path, self.state, self.sitting, self.code = path, state, sitting, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def _save(self) -> None:
        self.sitting["seconds"] = round(time.time() - self._t0, 1)
        write_json_atomic(self.path, self.state)

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK_S):
            self._save()

    def __enter__(self) -> "SittingClock":
        self._t0 = time.time()
        self._save()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sitting["code"] = self.code
        self._save()
