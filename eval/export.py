"""`gcl-eval export RUN --output DIR`: a trained backbone that plain torchvision or timm loads.

DIR/model.safetensors holds the backbone only, under the state-dict keys of the torchvision / timm
module it was built from (gcl's `backbone.` prefix and the method's heads left out);
DIR/config.json says how to rebuild and feed it: architecture, library and constructor, CIFAR
stem, input resolution, normalisation, feature width, and where it came from (the run's folder
name, the checkpoint inside it and that file's sha256: never an absolute path).
docs/python-api.md shows the lines that rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gcl.backbones import source_of
from gcl.errors import UserError
from gcl.io import sha256_file, write_bytes_atomic, write_json_atomic
from gcl.eval.features import load_checkpoint

EXPORT_FORMAT = "gcl-export"
EXPORT_VERSION = 1


class ExportError(UserError):
    """An output folder export must not write into (one-line message)."""


def export_run(run: str, output: str, which: str = "last") -> dict:
    """Write OUTPUT/model.safetensors and OUTPUT/config.json for RUN's checkpoint; returns the config."""
    from safetensors.torch import save

    out = Path(output)
    _check_output(out)
    ckpt, net, info = load_checkpoint(run, which)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    res = int(info["resolution"])
    with torch.no_grad():
        feature_dim = int(net(torch.zeros(1, 3, res, res)).shape[1])
    model = save(state, metadata={"format": "pt"})  # "pt": what timm / transformers expect
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    config = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "arch": info["backbone"], **source_of(info["backbone"], info["cifar_stem"], res),
        "cifar_stem": bool(info["cifar_stem"]), "resolution": res,
        "mean": [float(v) for v in info["mean"]], "std": [float(v) for v in info["std"]],
        "feature_dim": feature_dim, "method": info.get("method", ""),
        "epoch": int(info.get("epoch", 0)), "global_step": int(info.get("global_step", 0)),
        "source_run": run_dir.resolve().name, "checkpoint": ckpt.resolve().relative_to(run_dir.resolve()).as_posix(),
        "checkpoint_sha256": sha256_file(ckpt), "model_sha256": _sha256(model),
    }
    out.mkdir(parents=True, exist_ok=True)
    # the weights first, config.json (which names their sha256) last: a reader never pairs a
    # finished config.json with half a model file
    write_bytes_atomic(out / "model.safetensors", model)
    write_json_atomic(out / "config.json", config)
    return config


def _check_output(out: Path) -> None:
    """An empty or missing folder, or an earlier export (replaced); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--output {out} is a file; give a folder for model.safetensors and config.json")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        earlier = None
    ours = {"config.json", "model.safetensors"}
    if not isinstance(earlier, dict) or earlier.get("format") != EXPORT_FORMAT \
            or not {p.name for p in out.iterdir()} <= ours:
        raise ExportError(f"--output {out} holds other files (not a gcl-eval export); choose an empty or new folder")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
