"""docs/python-api.md: the Python blocks of the export, load_backbone, backbone, override and probe
sections run as shown, on tiny runs and exports at the paths they name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from test_export import make_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gcl.checkpoint import load_backbone  # noqa: E402
from gcl.eval.cli import main as gcl_eval  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
SECTIONS = ("Export an encoder", "Load a gcl checkpoint", "Backbones by name", "Override recipe values", "Probes")


def section_snippets(title: str) -> list[str]:
    """The ```python blocks between '## TITLE' and the next '## ' heading, in order."""
    parts = re.split(r"^## ", PAGE.read_text(), flags=re.M)
    body = next(p for p in parts if p.startswith(title + "\n"))
    return re.findall(r"^```python\n(.*?)^```", body, flags=re.S | re.M)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """runs/simclr (resnet18) and exports of it, of a timm:resnet10t run and of a resnet20 run."""
    root = tmp_path_factory.mktemp("api")
    for run, backbone, export in (("simclr", "resnet18", "resnet18"), ("r10t", "timm:resnet10t", "resnet10t"),
                                  ("r20", "resnet20", "resnet20")):
        make_run(root / "runs" / run, backbone)
        r = CliRunner().invoke(gcl_eval, ["export", str(root / "runs" / run), "--output", str(root / "exported" / export)])
        assert r.exit_code == 0, r.output
    return root


@pytest.mark.parametrize("title", SECTIONS)
def test_section_snippets_run(title, workspace, monkeypatch):
    snippets = section_snippets(title)
    if title == "Override recipe values":
        assert not snippets  # shell only: tests/test_train_overrides.py runs it
        return
    assert snippets, title
    monkeypatch.chdir(workspace)
    scope: dict = {}
    for snippet in snippets:
        exec(compile(snippet, f"{PAGE.name}: {title}", "exec"), scope)  # noqa: S102 - the page's own code
    if title == "Export an encoder":  # the last rebuild (gcl's resnet20) gives gcl's own features
        gcl_net, info = load_backbone("runs/r20/checkpoints/last.ckpt")
        mean, std = torch.tensor(info["mean"]).view(1, 3, 1, 1), torch.tensor(info["std"]).view(1, 3, 1, 1)
        with torch.no_grad():
            expected = gcl_net((scope["images"] - mean) / std)
        assert torch.allclose(scope["features"], expected, atol=1e-5, rtol=0)
    if title == "Load a gcl checkpoint":
        assert scope["features"].shape == (4, 512) and scope["info"]["backbone"] == "resnet18"
    if title == "Backbones by name":
        assert Path("resnet10t.safetensors").stat().st_size > 1e6
    if title == "Probes":
        assert scope["ranked"].shape == (50, 10)

