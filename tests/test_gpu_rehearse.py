"""bench/gpu_checks.sh --rehearse: the GPU machine's script, on the CPU with toy sizes, end to end.

It installs the carried wheels (bench/device_wheels.sh fetches them into .whl/ when missing) and gcl
itself with pip --no-index --target, runs the four checks and packs the result files, exactly as on
the GPU machine; a broken GPU script fails here before a GPU is lent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"taesd", "vqgan", "esrgan", "diffusion", "maskgit", "mae"}
CHECKS = ["families", "synthesis", "training", "study"]
NAME = re.compile(r"[A-Za-z0-9._-]+")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_rehearsal_runs_every_check_and_returns_at_most_8_files(tmp_path):
    if not (ROOT.parent / "shared/data/cifar10_train.npz").is_file():
        pytest.skip("needs CIFAR-10 in ../shared/data")
    subprocess.run(["bash", "bench/device_wheels.sh"], cwd=ROOT, check=True, capture_output=True)
    out = tmp_path / "out"
    # the project's environment activated: its python3 (the one running the tests) first on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "OUT": str(out), "REHEARSE_MINUTES": "30"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", "bench/gpu_checks.sh", "--rehearse"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = [p for p in out.rglob("*") if p.is_file()]
    assert 1 <= len(files) <= 8, files
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(NAME.fullmatch(part) for part in rel.parts), rel
        assert p.stat().st_size <= 16 << 20, rel

    text = (out / "summary.json").read_text()
    assert str(ROOT) not in text and str(tmp_path) not in text, "a local absolute path in the summary"
    summary = json.loads(text)
    assert summary["mode"] == "rehearse"
    assert list(summary["checks"]) == CHECKS
    for name in CHECKS:
        assert summary["checks"][name]["status"] == "ok", (name, summary["checks"][name])

    families = summary["checks"]["families"]["results"]
    assert families["bf16_matmul_peak_tflops"] > 0
    assert set(families["families"]) == FAMILIES
    for fam, res in families["families"].items():
        for precision in ("fp16", "bf16"):
            row = res[precision]
            assert "error" not in row, (fam, precision, row)
            assert row["img_s"] > 0 and row["gflops_per_image"] > 0 and row["share_of_bf16_peak"] > 0, (fam, row)
            assert row["nan_count"] == 0, (fam, precision, row)
            assert row["identical_to_fp32"] or row["psnr_vs_fp32_db"] > 20, (fam, precision, row)

    synthesis = summary["checks"]["synthesis"]["results"]["families"]
    assert set(synthesis) == {"taesd", "esrgan"}
    for fam, res in synthesis.items():
        assert res["pipeline_img_s"] > 0 and res["model_only_img_s"] > 0, (fam, res)
        assert res["pipeline_vs_model_only"] == pytest.approx(res["pipeline_img_s"] / res["model_only_img_s"], rel=0.01)

    training = summary["checks"]["training"]["results"]
    assert training["timed_steps"] >= 1 and training["samples_per_s"] > 0
    assert 0 <= training["data_wait_share"] <= 1 and training["backbone"] == "resnet18"

    study = summary["checks"]["study"]
    assert study["new_results"], study
    with tarfile.open(out / "study_runs.tar.gz") as tar:
        names = tar.getnames()
        assert set(f"runs/{r}" for r in study["new_results"]) <= set(names), names
        result = json.load(tar.extractfile(f"runs/{study['new_results'][0]}"))
    assert "knn_top1" in json.dumps(result), result

    table = subprocess.run([sys.executable, "bench/gpu_table.py", str(out / "summary.json")], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout
    for fam in FAMILIES:
        assert f"| {fam} | fp16 |" in table and f"| {fam} | bf16 |" in table, table
    assert "| taesd (" in table and "| esrgan (" in table and "| resnet18 simclr" in table, table

    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {Path(n).name for n in tar.getnames()}
    assert {"install.log", "driver.log", "families.log", "synthesis.log", "training.log", "study.log"} <= logs, logs


def test_on_a_node_with_gcl_installed_the_checks_use_that_environment(tmp_path):
    """Without .whl/ (a GPU node with gcl installed), the script uses python3's own environment and
    writes to bench/out/gpu unless OUT says otherwise; on a machine without CUDA it stops there in
    one line, after finding gcl and its dependencies importable."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the real checks")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "gpu_checks.sh").write_text((ROOT / "bench" / "gpu_checks.sh").read_text())
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(["bash", "bench/gpu_checks.sh"], cwd=tmp_path, env={**env, "PATH": path},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().endswith("torch.cuda.is_available() is False"), proc.stderr
    summary = json.loads((tmp_path / "bench" / "out" / "gpu" / "summary.json").read_text())
    assert summary["error"] == "torch.cuda.is_available() is False" and summary["mode"] == "gpu"
