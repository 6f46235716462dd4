"""Benchmark (not a test): peak resident memory of `gcl-eval knn` as the bank grows.

    nice .venv/bin/python bench/eval_memory.py [--sizes 5000 20000] [--old-ref REV]

Writes banks of N CIFAR-10 train images upscaled to 64 px (an uncompressed .npz) and a 500-image
test set, then runs `gcl-eval knn` on each in a fresh process (a random-init resnet18_w0.25 with
the ImageNet stem: a 128-d feature matrix, cheap enough for a CPU) and prints the process's peak
RSS (with --loader-only: of the loading phase alone, in a process that imports only the loader
and torch). With --old-ref, the same command also runs from that git revision's code (extracted with
`git archive`, imported ahead of the installed gcl), to compare with an earlier loader.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10_train.npz"


def write_bank(path: Path, images: np.ndarray, labels: np.ndarray, names: np.ndarray) -> Path:
    upscaled = images.repeat(2, axis=1).repeat(2, axis=2)  # 32 -> 64 px (nearest): bytes like a 64 px set
    np.savez(path, images=upscaled, labels=labels, class_names=names)
    return path


def old_code(ref: str, into: Path) -> Path:
    """The revision's gcl laid out as an importable package (gcl/ with eval/, synth/, train/ inside)."""
    src = into / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = into / "pkg" / "gcl"
    shutil.copytree(src / "gcl", pkg)
    for app in ("eval", "synth", "train"):
        shutil.copytree(src / app, pkg / app)
    return into / "pkg"


# The loading phase alone, without the CLI's imports (whose own peak, ~640 MiB, hides a
# smaller loader): read the bank at 64 px and fingerprint it, as the feature cache does first.
LOADER_ONLY = {
    "streaming": "from gcl.labelled import LabelledSource; from gcl.eval.features import _scan; "
                 "_scan(LabelledSource({bank!r}, 64).batches, 256)",
    "whole": "from gcl.labelled import load_labelled; from gcl.eval.features import data_fingerprint; "
             "d = load_labelled({bank!r}, 64); data_fingerprint(d.images, d.labels)",
}


def loader_rss_mib(bank: Path, pythonpath: Path | None) -> float:
    code = LOADER_ONLY["whole" if pythonpath is not None else "streaming"].format(bank=str(bank))
    return _child_peak([sys.executable, "-c", code], pythonpath)[1]


def _child_peak(args: list[str], pythonpath: Path | None) -> tuple[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # run outside the repository: `python -c` puts the working folder first on sys.path, and the
    # repository's own gcl/ would then shadow the revision under test
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    output = proc.stdout.read().decode()
    _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own peak
    if status != 0:
        raise SystemExit(f"{args[2][:60]} failed:\n{output}")
    return output, usage.ru_maxrss / 1024  # KiB on Linux


def check_code_under_test(pythonpath: Path | None) -> None:
    """The child imports gcl from the revision under test (and this code from this checkout)."""
    output, _ = _child_peak([sys.executable, "-c", "import gcl.labelled, gcl.eval.cli; "
                             "print(gcl.labelled.__file__); print(gcl.eval.cli.__file__)"], pythonpath)
    want = str(pythonpath) if pythonpath is not None else str(REPO)
    if not all(line.startswith(want) for line in output.split()):
        raise SystemExit(f"the child imports gcl from {output.split()}, not from {want}")


def peak_rss_mib(bank: Path, test: Path, cache: Path, pythonpath: Path | None) -> float:
    """Peak RSS of one `gcl-eval knn` process (wait4 reports that child's own maximum)."""
    args = [sys.executable, "-c", "from gcl.eval.cli import main; main()", "knn", "--random-init",
            "--backbone", "resnet18_w0.25", "--imagenet-stem", "--resolution", "64", "--eval-train", str(bank),
            "--eval-test", str(test), "--no-baselines", "--cache-dir", str(cache), "--device", "cpu",
            "--output", str(cache / "result.json")]
    output, peak = _child_peak(args, pythonpath)
    top1 = next((line for line in output.splitlines() if "top-1" in line or "top1" in line), "")
    print(f"    {top1.strip()}")
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--old-ref", default=None, help="git revision whose loader to measure beside this one")
    ap.add_argument("--loader-only", action="store_true", help="measure only the loading phase (no model, seconds)")
    args = ap.parse_args()
    with np.load(CIFAR) as z:
        images, labels, names = z["images"], z["labels"], z["class_names"]
    with tempfile.TemporaryDirectory(prefix="gcl-eval-mem-") as tmp:
        tmp = Path(tmp)
        test = write_bank(tmp / "test.npz", images[-500:], labels[-500:], names)
        codes = {"streaming (this code)": None}
        if args.old_ref:
            codes[f"whole set in memory ({args.old_ref})"] = old_code(args.old_ref, tmp / "old")
        for path in codes.values():
            check_code_under_test(path)
        rows = []
        for n in args.sizes:
            bank = write_bank(tmp / f"bank{n}.npz", images[:n], labels[:n], names)
            for label, path in codes.items():
                cache = tmp / f"cache-{n}-{len(rows)}"
                cache.mkdir()
                print(f"{label}: bank of {n} images at 64 px ...", flush=True)
                rss = loader_rss_mib(bank, path) if args.loader_only else peak_rss_mib(bank, test, cache, path)
                rows.append((label, n, rss))
            bank.unlink()
        print(f"\n{'loader':<40} {'bank':>7} {'peak RSS MiB':>13}")
        for label, n, rss in rows:
            print(f"{label:<40} {n:>7} {rss:>13.0f}")
        for label in codes:
            mine = [rss for lab, _n, rss in rows if lab == label]
            print(f"{label}: grows {mine[-1] - mine[0]:+.0f} MiB from {args.sizes[0]} to {args.sizes[-1]} images")


if __name__ == "__main__":
    main()
