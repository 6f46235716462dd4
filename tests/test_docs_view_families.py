"""docs/python-api.md, "Reading view families": every python snippet runs as written, on a small
shard set made here (out/c10: 64 CIFAR-10 families, K=2, four shards), and prints what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_data import make_shards

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def _section_snippets(heading: str) -> dict[str, str]:
    """The python blocks of one `## heading` section, by the `###` subsection they sit in."""
    text = DOC.read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    snippets, sub = {}, heading
    for block in re.split(r"(?m)^(### .*)$", section):
        if block.startswith("### "):
            sub = block[4:].strip()
        for code in re.findall(r"```python\n(.*?)```", block, re.S):
            snippets[sub] = code
    return snippets


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_docs")
    make_shards(root / "out" / "c10", n=64, per_shard=16, name="c10")
    return root


def _run(code: str, cwd: Path) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(cwd / "hf"))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_section_has_the_four_routes():
    assert set(_section_snippets("Reading view families")) == {
        "A training loop with timm and lightly", "Plain webdataset, without gcl", "Hugging Face datasets"}


@pytest.mark.timeout(300)
def test_training_loop_snippet_trains(workdir):
    out = _run(_section_snippets("Reading view families")["A training loop with timm and lightly"], workdir)
    losses = [float(x) for x in re.findall(r"^epoch \d: loss ([0-9.]+)$", out, re.M)]
    assert len(losses) == 2 and all(0 < x < 10 for x in losses), out


def test_plain_webdataset_snippet_reads_every_family(workdir):
    out = _run(_section_snippets("Reading view families")["Plain webdataset, without gcl"], workdir)
    assert re.fullmatch(r"64 families; last: \(32, 32\) \(32, 32\) class \d\n", out), out


def test_hugging_face_datasets_snippet_gives_typed_columns(workdir):
    pytest.importorskip("datasets")
    out = _run(_section_snippets("Reading view families")["Hugging Face datasets"], workdir).splitlines()
    assert out[0].startswith("Image(") and "int64" in out[0], out
    assert re.fullmatch(r"64 img\d{5} \(32, 32\) \(32, 32\) \d", out[1]), out
