"""The GPU checks in priority order, each a child process under its own time budget, packed into
at most 8 files under --out: summary.json (every figure), logs.tar.gz, study_runs.tar.gz.

Started by bench/gpu_checks.sh (which installs the fetched wheels and gcl first when .whl/ holds them); --rehearse runs
the same checks on the CPU with toy sizes. Children run with PYTHONSAFEPATH=1 so that the
repository's gcl/ folder never shadows the installed package.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

from gcl.yamlsafe import safe_load  # the loader of shared YAML (alias cap, no duplicate keys)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
STUDY = Path("studies/cifar10-gpu/study.yaml")  # relative to the repository root, like its own paths
PACK_RESERVE_S = 20  # kept back from the deadline to write the summary and the archives
KILL_GRACE_S = 15  # between SIGTERM (the study records its sitting) and SIGKILL
MIN_STUDY_S = 60  # less than this left: the study is not started
# (check, seconds on the GPU, seconds in the CPU rehearsal), in priority order
BUDGETS = [("families", 260, 480), ("synthesis", 110, 360), ("training", 90, 240), ("study", None, None)]
FAMILY_ORDER = ["taesd", "esrgan", "vqgan", "mae", "maskgit", "diffusion"]  # cheapest first: a cut loses the fewest
MAX_LOG_BYTES = 2 << 20  # the tail of a log kept in the archive


def child_env() -> dict:
    return {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def run_child(cmd: list[str], log: Path, timeout: float) -> tuple[str, float, int | None]:
    """Run a check; returns (ok | failed | timeout, seconds, exit code)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=child_env(),
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return "timeout", time.perf_counter() - t0, None
    return ("ok" if code == 0 else "failed"), time.perf_counter() - t0, code


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:]).replace(str(REPO) + os.sep, "")


def study_inputs(study_file: Path) -> list[str]:
    """The files and folders a study reads (paths relative to the repository root)."""
    data = safe_load(study_file.read_text())
    paths = [data["eval"]["bank"], data["eval"]["test"]]
    for opts in data["shard_sets"].values():
        paths += [opts[k] for k in ("input", "model") if opts.get(k)]
    return sorted(set(paths))


def rehearse_study(tmp: Path, cifar: str) -> Path:
    """The GPU study at toy size: same arms and shard sets, one seed, 32 images, one epoch,
    random-init TAEF2 and ESRGAN (their real layouts), in a temporary study folder."""
    sys.path.insert(0, str(BENCH))
    from family_configs import build

    data = safe_load((REPO / STUDY).read_text())
    data.update(seeds=[0], output=str(tmp / "out"))
    test = cifar.replace("_train", "_test")
    # without the test file, queries come from train images neither the bank (its first 64) nor
    # pretraining (the first 32) reads: a study refuses queries that are bank or pretraining images
    data["eval"].update(bank=cifar, test=test if Path(test).is_file() else f"{cifar}[64:128]", limit_bank=64,
                        limit_test=64, batch_size=64, linear=True)
    for name, opts in data["shard_sets"].items():
        opts.update(input=cifar, limit=32, batch_size=16, resolution=32,
                    model=str(build(opts["generator"], tmp / "models" / name, full=False)))
    data["train"].update(epochs=1, batch_size=16)
    folder = tmp / "study"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder / "study.yaml"


def pack_study(study_file: Path, out: Path) -> list[str]:
    """Every finished run result and the report, laid out to unpack into the study's folder:
    `tar -xzf study_runs.tar.gz -C studies/cifar10-gpu`."""
    folder = study_file.parent
    members = sorted((folder / "runs").glob("*.json")) + [p for p in (folder / "results.md", folder / "results.png")
                                                           if p.is_file()]
    with tarfile.open(out, "w:gz") as tar:
        for p in members:
            tar.add(p, arcname=str(p.relative_to(folder)))
    return [str(p.relative_to(folder)) for p in members]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rehearse", action="store_true")
    ap.add_argument("--deadline", type=float, required=True, help="epoch seconds by which everything is packed")
    ap.add_argument("--data", default=".gpu-data", help="carried folder: cifar10_train_5k.npz, models/")
    ap.add_argument("--only", default=None, help="comma-separated checks to run (default: all)")
    ap.add_argument("--logs", required=True, help="folder of logs (the set-up's already there): packed into logs.tar.gz")
    args = ap.parse_args()
    out, logs = Path(args.out), Path(args.logs)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gcl-gpu-checks-"))
    py = sys.executable
    gpu = not args.rehearse
    import torch

    summary = {"mode": "rehearse" if args.rehearse else "gpu", "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "cpu_cores": os.cpu_count(), "checks": {}}
    data = REPO / args.data
    # the carried subset, else CIFAR-10 beside the checkout (a rehearsal, or a machine that has ../shared)
    npz = next((p for p in (data / "cifar10_train_5k.npz", REPO.parent / "shared/data/cifar10_train.npz") if p.is_file()), None)
    summary["cifar10"] = os.path.relpath(npz, REPO) if npz else None
    models = data / "models"
    shards = tmp / "taesd-shards"
    fam = ["--toy", "--resolution", "16", "--batch-size", "2", "--iters", "1", "--time-per-precision", "1",
           "--peak-size", "256"] if args.rehearse else (["--input", str(npz)] if npz else [])
    commands = {
        "families": [py, str(BENCH / "gpu_families.py"), "--families", ",".join(FAMILY_ORDER), *fam],
        "synthesis": [py, str(BENCH / "gpu_synth.py"), "--input", str(npz), "--models", str(models), "--keep-shards",
                      str(shards), *(["--images", "16", "--batch-size", "8"] if args.rehearse else [])],
        "training": [py, str(BENCH / "gpu_train.py"), "--shards", str(shards / "bench_taesd.manifest.json"),
                     *(["--batch-size", "4", "--epochs", "2", "--seconds", "20"] if args.rehearse else ["--seconds", "60"])],
    }
    only = set(args.only.split(",")) if args.only else None
    for name, gpu_s, cpu_s in BUDGETS:
        left = args.deadline - time.time() - PACK_RESERVE_S
        if only is not None and name not in only:
            summary["checks"][name] = {"status": "skipped", "why": "not in --only"}
            continue
        if name == "study":
            summary["checks"][name] = study_check(args, py, tmp, logs, out, left, npz)
            continue
        if npz is None and name != "families":
            summary["checks"][name] = {"status": "skipped", "why": f"no CIFAR-10 images: copy {args.data} "
                                       "(bash bench/device_data.sh)"}
            continue
        budget = min(gpu_s if gpu else cpu_s, left)
        if budget < 10:
            summary["checks"][name] = {"status": "skipped", "why": f"only {left:.0f} s left before the deadline"}
            continue
        result = tmp / f"{name}.json"
        status, seconds, code = run_child([*commands[name], "--json", str(result)], logs / f"{name}.log", budget)
        figures = read_json(result)
        if status == "timeout" and figures:
            status = "partial"  # cut at its budget; what it finished is in the figures
            for fam in FAMILY_ORDER if name == "families" else ():
                figures["families"].setdefault(fam, {"error": "not reached within the check's time budget"})
        entry = {"status": status, "seconds": round(seconds, 1), "budget_s": round(budget), "exit_code": code}
        if status not in ("ok", "partial"):
            entry["log_tail"] = log_tail(logs / f"{name}.log")
        summary["checks"][name] = {**entry, "results": figures}
        print(f"{name}: {status} in {seconds:.0f} s", flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))  # a killed call still leaves one
    summary["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    pack_logs(logs, out / "logs.tar.gz")
    print(json.dumps({k: v["status"] for k, v in summary["checks"].items()}), flush=True)


def study_check(args, py: str, tmp: Path, logs: Path, out: Path, left: float, npz: Path | None) -> dict:
    """Check 4: one more run of the GPU study (gcl-eval study --max-runs 1) in the time left. Its
    finished results come back in study_runs.tar.gz; once committed, the next call skips them."""
    if args.rehearse:
        if npz is None:
            return {"status": "skipped", "why": "no CIFAR-10 beside the checkout (../shared/data)"}
        study_file = rehearse_study(tmp, str(npz))
    else:
        study_file = REPO / STUDY
        missing = [p for p in study_inputs(study_file) if not (REPO / p).exists()]
        if missing:
            return {"status": "skipped", "why": "the study's inputs are not on this machine: " + ", ".join(missing)}
    budget = left - KILL_GRACE_S
    if budget < MIN_STUDY_S:
        return {"status": "skipped", "why": f"only {left:.0f} s left before the deadline"}
    before = {p.name for p in (study_file.parent / "runs").glob("*.json")}
    cmd = [py, "-m", "gcl.eval.cli", "study", str(study_file), "--max-runs", "1"]
    status, seconds, code = run_child(cmd, logs / "study.log", budget)
    after = {p.name for p in (study_file.parent / "runs").glob("*.json")}
    packed = pack_study(study_file, out / "study_runs.tar.gz")
    entry = {"status": status, "seconds": round(seconds, 1), "budget_s": round(budget), "exit_code": code,
             "new_results": sorted(after - before), "packed": packed,
             "unpack": "tar -xzf study_runs.tar.gz -C studies/cifar10-gpu"}
    if status != "ok":
        entry["log_tail"] = log_tail(logs / "study.log")
    print(f"study: {status} in {seconds:.0f} s, new results {entry['new_results']}", flush=True)
    return entry


def pack_logs(logs: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(logs.iterdir()):
            data = p.read_bytes()[-MAX_LOG_BYTES:]
            info = tarfile.TarInfo(p.name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
