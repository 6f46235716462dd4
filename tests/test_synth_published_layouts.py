"""gcl-synth run on models in their published repository layouts (tiny widths, random weights):
aMUSEd's (model_index.json + vqvae/) for --generator vqgan, google/ddpm-cifar10-32's root layout
(config.json + scheduler_config.json) for --generator diffusion."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gcl.shards import read_shard
from gcl.synth.cli import main
from published import build


def synth(args):
    return CliRunner().invoke(main, ["run", "--no-progress"] + [str(a) for a in args])


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


@torch.inference_mode()
def test_vqgan_in_amused_layout_reconstructs_in_unit_range(tmp_path, cifar_test_npz):
    from diffusers import VQModel

    model = build("amused-256", tmp_path / "amused-256")
    out = tmp_path / "out"
    res = synth(["--generator", "vqgan", "--model", model, "--input", cifar_test_npz, "--limit", 4, "--views", 1,
                 "--resolution", 64, "--recipe", "noise(strength=0)", "--image-format", "png", "--output", out])
    assert res.exit_code == 0, res.output
    (manifest,) = out.glob("*.manifest.json")
    generator = json.loads(manifest.read_text())["generator"]
    assert generator["pixel_range"] == "0-1" and generator["id"] == "vqgan:VQModel pixels 0-1"
    vq = VQModel.from_pretrained(model / "vqvae").eval()
    samples = [s for p in sorted(out.glob("*.tar")) for s in read_shard(p)]
    assert len(samples) == 4
    for s in samples:
        x = torch.from_numpy(_png(s["orig.png"]) / 255).permute(2, 0, 1)[None].float()
        ref = vq.decode(vq.encode(x).latents).sample.clip(0, 1)[0].permute(1, 2, 0).numpy() * 255
        mse = ((_png(s["view0.png"]) - ref) ** 2).mean()
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) >= 30  # >= 30 dB against VQModel.decode(VQModel.encode(x))


def test_diffusion_in_ddpm_root_layout_runs(tmp_path, cifar_test_npz):
    model = build("ddpm-cifar10-32", tmp_path / "ddpm-cifar10-32")
    assert not (model / "unet").exists() and (model / "scheduler_config.json").is_file()
    out = tmp_path / "out"
    res = synth(["--generator", "diffusion", "--model", model, "--input", cifar_test_npz, "--limit", 2, "--views", 2,
                 "--resolution", 32, "--recipe", "sdedit(strength=0.3, steps=10)", "--image-format", "png", "--output", out])
    assert res.exit_code == 0, res.output
    (manifest,) = out.glob("*.manifest.json")
    m = json.loads(manifest.read_text())
    assert m["totals"]["samples"] == 2 and m["generator"]["arch"] == "pixel UNet2DModel"
    assert m["generator"]["timestep_spacing"] == "leading" and m["generator"]["clip_sample"] is True
    for s in (s for p in sorted(out.glob("*.tar")) for s in read_shard(p)):
        assert s["view0.png"] != s["view1.png"]  # two noise draws, two views
    assert str(tmp_path) not in manifest.read_text()  # no local paths in the artifact


@pytest.mark.parametrize("bad", [{"config.json": None}, {"scheduler_config.json": None}])
def test_broken_root_layout_is_one_line(tmp_path, cifar_test_npz, bad):
    model = build("ddpm-cifar10-32", tmp_path / "ddpm")
    for name in bad:
        (model / name).unlink()
    res = synth(["--generator", "diffusion", "--model", model, "--input", cifar_test_npz, "--limit", 2,
                 "--resolution", 32, "--output", tmp_path / "o"])
    assert res.exit_code != 0 and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert "config.json" in res.output


def test_pixel_range_option_is_recorded(tmp_path, cifar_test_npz):
    """A bare VQModel is read as [-1, 1]; --pixel-range states otherwise, and a range change is another plan."""
    model = build("ldm-celebahq-256-vqvae", tmp_path / "taming-vqgan")
    base = ["--generator", "vqgan", "--model", model, "--input", cifar_test_npz, "--limit", 2, "--views", 1,
            "--resolution", 32, "--image-format", "png"]
    ranges = {}
    for option in ("auto", "-1-1", "0-1"):
        out = tmp_path / option
        res = synth(base + ["--pixel-range", option, "--output", out])
        assert res.exit_code == 0, res.output
        (manifest,) = out.glob("*.manifest.json")
        ranges[option] = json.loads(manifest.read_text())["generator"]["pixel_range"]
        views = [s["view0.png"] for p in sorted(out.glob("*.tar")) for s in read_shard(p)]
        ranges[option + " views"] = views
    assert ranges["auto"] == ranges["-1-1"] == "-1-1" and ranges["0-1"] == "0-1"
    assert ranges["auto views"] == ranges["-1-1 views"] != ranges["0-1 views"]
    again = synth(base + ["--pixel-range", "0-1", "--output", tmp_path / "-1-1"])
    assert again.exit_code != 0 and "generator" in again.output and len(again.output.strip().splitlines()) == 1
