"""`gcl-eval study STUDY.yaml`: run what is missing of arms x seeds, evaluate, write one report.

A run is done when its result file (STUDY_FOLDER/runs/ARM-sSEED.json) exists and carries the
arm's current digest; everything else is planned: evaluate (training finished, no result yet),
resume (a last.ckpt of the same digest: a killed study continues where it stopped), or train.
A result or run folder made with a different digest (the arm, the train defaults or its shard
set's options changed) is stale: the study refuses to start until `--rerun-stale` replaces it,
so edited YAML never silently mixes old and new numbers in one table.
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import signal
import subprocess
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import gcl
from gcl.eval.study.config import MERGE_KEY, Study, StudyError, data_file
from gcl.eval.study.datafiles import DataSpec, DataSpecError, check_rows
from gcl.eval.study.progress import StudyClock
from gcl.eval.study.runs import (check_recipes, check_same_inputs, foreign_folder, make_shard_set, measure_train_flops,
                                 run_state, shard_set_ready, synth_command, synth_config, train_command, train_run,
                                 train_status, write_arm_recipes)
from gcl.io import write_json_atomic
from gcl.provenance import code_version
from gcl.manifest import load_manifest


TRAINS = ("train", "resume", "stale")  # planned actions that run gcl-train


@dataclass
class PlannedRun:
    arm: str
    seed: int
    action: str  # done | stale | evaluate | resume | train
    why: str = ""


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def plan_run(study: Study, arm: str, seed: int) -> PlannedRun:
    digest = study.digest(arm)
    result = read_json(study.result_path(arm, seed))
    if result is not None:
        if result.get("digest") == digest:
            return PlannedRun(arm, seed, "done")
        return PlannedRun(arm, seed, "stale", "its result was made with another configuration of the arm")
    status = train_status(study.run_dir(arm, seed))
    made_with = run_state(study, arm, seed).get("digest")
    if status != "none" and made_with != digest:
        return PlannedRun(arm, seed, "stale", "its run folder holds a run of another configuration")
    return PlannedRun(arm, seed, {"finished": "evaluate", "partial": "resume", "none": "train"}[status])


def plan(study: Study, arms: list[str], seeds: list[int]) -> list[PlannedRun]:
    """Seed-major order: every arm of seed 0 first, so paired comparisons exist early."""
    return [plan_run(study, arm, seed) for seed in seeds for arm in arms]


def select(study: Study, only: str | None, seeds: str | None) -> tuple[list[str], list[int]]:
    arms = [a.strip() for a in only.split(",") if a.strip()] if only else list(study.arms)
    unknown = [a for a in arms if a not in study.arms]
    if unknown:
        raise StudyError(f"--only: unknown arm(s) {', '.join(unknown)}; arms: {', '.join(study.arms)}")
    try:
        chosen = [int(s) for s in seeds.split(",") if s.strip()] if seeds else list(study.seeds)
    except ValueError:
        raise StudyError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    extra = [s for s in chosen if s not in study.seeds]
    if extra:
        raise StudyError(f"--seeds: seed(s) {extra} are not in the study's seeds {study.seeds}")
    return arms, chosen


def synth_cost(manifest: dict) -> dict:
    """Synthesis cost of a shard set: the manifest's `cost` block when gcl-synth wrote one, else
    the wall seconds of its last sitting (`throughput`), which undercounts a resumed set."""
    cost = manifest.get("cost")
    if isinstance(cost, dict):
        return {"seconds": cost.get("seconds"), "flops_per_image": cost.get("flops_per_image"),
                "images": cost.get("images"), "cpu_seconds": cost.get("cpu_seconds"),
                "load_avg_1m": cost.get("load_avg_1m"), "source": "cost"}
    tp = manifest.get("throughput") or {}
    return {"seconds": tp.get("seconds"), "flops_per_image": None, "images": tp.get("generated_samples"),
            "source": "throughput"}


def result_record(study: Study, arm: str, seed: int, scores: dict, manifest: dict) -> dict:
    run_dir = study.run_dir(arm, seed)
    info = read_json(run_dir / "run.json") or {}
    sittings = run_state(study, arm, seed).get("sittings", [])
    seconds = round(sum(s["seconds"] for s in sittings), 1)
    steps = int(info.get("global_step", 0))
    samples = steps * int(info.get("batch_size", 0)) * int(info.get("world_size", 1))
    recipe = study.merged[arm]
    last = scores.get("last", {})
    headline = last.get("test") or {}  # top-level numbers: last.ckpt on the test split, when scored
    return {
        "study": study.name, "arm": arm, "seed": seed, "digest": study.digest(arm), "shard_set": study.arms[arm].shards,
        "run_dir": run_dir.as_posix(), "checkpoint": "checkpoints/last.ckpt",
        **{k: headline[k] for k in ("knn_top1", "knn_top5", "linear_top1", "linear_top5") if k in headline},
        "scores": scores,  # checkpoint (last, avg) -> split (test, val) -> kNN / linear top-1 and top-5, sizes
        "eval": {"bank": study.eval.bank, "test": study.eval.test, "val_bank": study.eval.val_bank,
                 "val_queries": study.eval.val_queries, "k": study.eval.k, "temperature": study.eval.temperature,
                 "n_bank": headline.get("n_bank"), "n_test": headline.get("n_queries"),
                 "feature_dim": last.get("feature_dim"), "ckpt_id": last.get("ckpt_id"),
                 "linear_epochs": headline.get("linear_epochs") or (last.get("val") or {}).get("linear_epochs")},
        "train": {"seconds": seconds, "sittings": len(sittings), "epochs": info.get("epochs_done"), "steps": steps,
                  "samples_per_s": round(samples / seconds, 2) if seconds else None,
                  "method": recipe.get("method"), "backbone": recipe.get("backbone"),
                  "batch_size": info.get("batch_size"), "gen_prob": recipe.get("gen_prob"),
                  "code": info.get("sittings", [])},  # per training sitting: commit, dirty, loader workers
        "synth": synth_cost(manifest),
        "recipe": recipe,  # the merged gcl-train recipe the digest covers (with the shard set's options)
        "gcl": code_version(),  # the code that scored; train.code records the code that trained
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def describe(p: PlannedRun, study: Study) -> str:
    text = f"{study.run_name(p.arm, p.seed)}: {p.action}"
    return text + (f" ({p.why})" if p.why else "")


def forget(study: Study, p: PlannedRun) -> PlannedRun:
    """--rerun-stale: drop the stale result and run folder; the run starts from scratch. Only what
    carries this study's mark is deleted (checked again here, just before deleting)."""
    why = foreign_folder(study, p.arm, p.seed) or _foreign_result(study, p.arm, p.seed)
    if why:
        raise StudyError(f"{why}; move it away, the study deletes only what it made")
    study.result_path(p.arm, p.seed).unlink(missing_ok=True)
    study.failed_path(p.arm, p.seed).unlink(missing_ok=True)
    shutil.rmtree(study.run_dir(p.arm, p.seed), ignore_errors=True)
    return PlannedRun(p.arm, p.seed, "train", "stale run replaced")


def _foreign_result(study: Study, arm: str, seed: int) -> str:
    path = study.result_path(arm, seed)
    result = read_json(path)
    if path.exists() and (result is None or result.get("study", study.name) != study.name):
        return f"{path} is not a result of study {study.name}"
    return ""


def check_ownership(study: Study, runs: list[PlannedRun]) -> None:
    """Refuse, before any work, to write into or delete a run folder or result the study did not make."""
    for p in runs:
        if p.action == "done":
            continue
        why = foreign_folder(study, p.arm, p.seed) or (_foreign_result(study, p.arm, p.seed) if p.action == "stale"
                                                       else "")
        if why:
            raise StudyError(f"{study.run_name(p.arm, p.seed)}: {why}; move it away (a study writes into and "
                             "deletes only what it made)")


def check_eval_data(study: Study) -> None:
    """The probes' data must exist before hours of training, not after."""
    ev = study.eval
    for what, spec in (("eval bank", ev.bank), ("eval test", ev.test), ("eval val_bank", ev.val_bank),
                       ("eval val_queries", ev.val_queries)):
        path = data_file(spec)
        if path is not None and not Path(path).exists():
            raise StudyError(f"{what} {path} not found (study paths are relative to the current folder: "
                             "run from the repository root)")
        if spec is not None:
            try:
                check_rows(DataSpec.parse(spec), what)
            except DataSpecError as exc:
                raise StudyError(str(exc)) from None


def check_arms(study: Study, arms: list[str]) -> None:
    """gcl-train's verdict on every arm's merged recipe, before any work starts."""
    paths = write_arm_recipes(study, arms)
    errors, _ = check_recipes(list(paths))
    if errors:
        path, error = next(iter(errors.items()))
        more = f" ({len(errors) - 1} more arm(s) rejected)" if len(errors) > 1 else ""
        raise StudyError(f"arm {paths[path]} rejected by gcl-train: {error.replace(f' in {path}', '')}{more}")


def prepare_shards(study: Study, arms: list[str], todo: list[PlannedRun], dry_run: bool, log,
                   scheduler: str | None = None, clock: StudyClock | None = None) -> dict[str, dict]:
    """Make the shard sets that runs to train need; check that all of the study's sets agree on input."""
    needed = {study.arms[p.arm].shards for p in todo if p.action in ("train", "resume", "stale")}
    for name in study.build_order(needed):  # a merged set after the sets it merges
        if shard_set_ready(study, name):
            continue
        if dry_run:
            sources = study.shard_sets[name].get(MERGE_KEY)
            log(f"would merge shard sets {', '.join(sources)} -> {study.shard_dir(name)}" if sources
                else f"would synthesize shard set {name} -> {study.shard_dir(name)}")
            if not sources:  # what the call's --config file will hold
                log(f"  shard set {name} config: {json.dumps(synth_config(study.synth[name]), sort_keys=True)}")
            log(f"  {shown_command(synth_command(study, name, scheduler))}")
        else:
            with clock.synthesis(name, study.shard_dir(name), study.shard_sets[name]) if clock else nullcontext():
                make_shard_set(study, name, log, scheduler)
    manifests = {n: load_manifest(study.manifest_path(n)) for n in sorted({study.arms[a].shards for a in study.arms})
                 if study.manifest_path(n).is_file()}
    check_same_inputs(manifests)
    return manifests


def shown_command(cmd: list[str]) -> str:
    """A tool call as a user would type it: `gcl-synth ...` / `gcl-train ...` for `python -m gcl.X.cli ...`."""
    tool = {"gcl.synth.cli": "gcl-synth", "gcl.train.cli": "gcl-train"}.get(cmd[2], cmd[2]) if len(cmd) > 2 else ""
    return shlex.join([tool, *cmd[3:]])


def log_train_settings(study: Study, todo: list[PlannedRun], log) -> None:
    """--dry-run: each arm's merged recipe (every training setting) and each run's gcl-train call."""
    for arm in sorted({p.arm for p in todo if p.action in TRAINS}):
        log(f"arm {arm} recipe: {json.dumps(study.merged[arm], sort_keys=True)}")
    for p in todo:
        if p.action in TRAINS:
            recipe = study.run_dir(p.arm, p.seed) / "recipe.yaml"
            manifest = study.manifest_path(study.arms[p.arm].shards)
            cmd = train_command(study, p.arm, p.seed, recipe, manifest, p.action == "resume")
            log(f"  {study.run_name(p.arm, p.seed)}: {shown_command(cmd)}")


def run_study(study: Study, only: str | None = None, seeds: str | None = None, dry_run: bool = False,
              max_runs: int | None = None, rerun_stale: bool = False, log=print, scheduler: str | None = None) -> int:
    """Returns the number of runs that failed (their records are in runs/ARM-sSEED.failed.json)."""
    # `timeout` and schedulers stop a study with SIGTERM: turn it into an exception so that the
    # running sitting's seconds are still recorded (try/finally in train_run) before we exit.
    in_main = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGTERM, signal.SIGHUP)  # a closed terminal stops the study (and its child) cleanly too
    previous = {s: signal.signal(s, _exit_on_sigterm) for s in stops} if in_main else {}
    try:
        return _run_study(study, only, seeds, dry_run, max_runs, rerun_stale, log, scheduler)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _run_study(study: Study, only, seeds, dry_run, max_runs, rerun_stale, log, scheduler=None) -> int:
    from gcl.eval.study.scoring import EvalData
    from gcl.eval.study.report import write_report

    arms, chosen = select(study, only, seeds)
    runs = plan(study, arms, chosen)
    check_ownership(study, runs)
    stale = [p for p in runs if p.action == "stale"]
    if dry_run:
        for p in runs:
            log(describe(p, study))
    if stale and not rerun_stale:
        names = ", ".join(study.run_name(p.arm, p.seed) for p in stale)
        raise StudyError(f"{len(stale)} run(s) are stale (arm changed since they ran): {names}; "
                         "pass --rerun-stale to replace them, or restore the arm's settings")
    todo = [p for p in runs if p.action != "done"][:max_runs]
    clock = StudyClock([(p.arm, study.merged[p.arm]) for p in todo if p.action in TRAINS], log)  # from here on
    if todo:
        check_eval_data(study)
    if dry_run:  # everything a dry run can tell, the arms' recipe check last
        prepare_shards(study, arms, todo, dry_run, log, scheduler)
        log_train_settings(study, todo, log)
        if todo:
            check_arms(study, sorted({p.arm for p in todo}))
        log(f"{len(todo)} run(s) would run" + ("; their arm recipes pass gcl-train's check" if todo else ""))
        return 0
    if todo:
        log(f"{len(todo)} run(s) to do; checking their arm recipes with gcl-train first")
        check_arms(study, sorted({p.arm for p in todo}))  # before synthesis: a typo must not cost hours
    else:
        log(f"nothing to run: all {len(runs)} selected run(s) have current results")
    manifests = prepare_shards(study, arms, todo, dry_run, log, scheduler, clock)
    fit = study.eval.fit_queries
    data = EvalData(study.eval, study.manifest_path(fit) if fit else None)
    failed = sum(not execute(study, p, f"[{i}/{len(todo)}]", data, manifests, log, clock)
                 for i, p in enumerate(todo, 1))
    write_report(study, log, measure_train_flops(study))
    clock.finish(failed)
    if study.note:
        log(study.note)
    return failed


def execute(study: Study, p: PlannedRun, step: str, data, manifests: dict[str, dict], log,
            clock: StudyClock | None = None) -> bool:
    """Train (or resume) one run if needed, then score it and write its result; False when training failed."""
    from gcl.eval.study.scoring import evaluate_run

    if p.action == "stale":  # only now, once every check has passed: --rerun-stale deletes the old run
        p = forget(study, p)
    name = study.run_name(p.arm, p.seed)
    run_dir, set_name = study.run_dir(p.arm, p.seed), study.arms[p.arm].shards
    started = time.time()
    if p.action in ("train", "resume"):
        log(f"{step} {name}: {p.action} (log: {run_dir / 'train.log'})")
        with clock.training(step, name, run_dir, study.merged[p.arm]) if clock else nullcontext():
            code, seconds, tail = train_run(study, p.arm, p.seed, study.manifest_path(set_name), p.action == "resume")
        if code != 0 or train_status(run_dir) != "finished":
            if clock:
                clock.run_finished(time.time() - started)
            study.failed_path(p.arm, p.seed).parent.mkdir(parents=True, exist_ok=True)  # the first run may fail
            write_json_atomic(study.failed_path(p.arm, p.seed), {
                "arm": p.arm, "seed": p.seed, "digest": study.digest(p.arm), "exit_code": code,
                "seconds": round(seconds, 1), "log": (run_dir / "train.log").as_posix(), "log_tail": tail})
            log(f"  FAILED (exit {code}); see {study.failed_path(p.arm, p.seed)}")
            return False
    log(f"{step} {name}: evaluate {run_dir / 'checkpoints'}")
    scores = evaluate_run(run_dir, data, log)
    record = result_record(study, p.arm, p.seed, scores, manifests.get(set_name) or {})
    study.result_path(p.arm, p.seed).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(study.result_path(p.arm, p.seed), record)
    study.failed_path(p.arm, p.seed).unlink(missing_ok=True)
    for split, sc in scores["last"].items():
        if isinstance(sc, dict):
            log(f"  {split}: kNN {sc['knn_top1']:.2f}" + (f"  linear {sc['linear_top1']:.2f}" if "linear_top1" in sc else ""))
    if clock and p.action in ("train", "resume"):
        clock.run_finished(time.time() - started)
    return True
