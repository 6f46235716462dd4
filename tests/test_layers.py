"""The layering is a rule a machine checks: the import-linter contracts in pyproject.toml.

The repository keeps the user's folders (synth/, train/, eval/) beside the core (gcl/) and maps
them to gcl.synth / gcl.train / gcl.eval at install time. import-linter (grimp) walks a package's
folder on disk, so the test assembles the installed shape in a temporary folder and runs
lint-imports there with the repository's own contracts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("synth", "train", "eval")


def _installed_shape(dst: Path) -> Path:
    pkg = dst / "gcl"
    shutil.copytree(ROOT / "gcl", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for app in APPS:
        shutil.copytree(ROOT / app, pkg / app, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def _lint(tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_contracts_hold(tmp_path):
    res = _lint(_installed_shape(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_cross_app_import_breaks_the_contract(tmp_path):
    shape = _installed_shape(tmp_path)
    with open(shape / "gcl" / "eval" / "knn_probe_tmp.py", "w") as fh:
        fh.write("from gcl.train import config  # noqa: F401\n")
    res = _lint(shape)
    assert res.returncode != 0 and "independent" in res.stdout.lower()


def test_every_core_module_is_under_the_core_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    core = next(c for c in config if c["type"] == "forbidden")
    on_disk = {f"gcl.{p.stem}" for p in (ROOT / "gcl").glob("*.py") if p.stem != "__init__"}
    assert set(core["source_modules"]) == on_disk
    assert set(core["forbidden_modules"]) == {f"gcl.{a}" for a in APPS}
