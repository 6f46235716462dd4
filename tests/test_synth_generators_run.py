"""gcl-synth run with the new families: --residual end to end, the manifest's cost record,
family default recipes, and one-line errors (recipe/generator mismatch, offline hub ids)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from gcl.shards import read_shard
from gcl.synth.cli import main


@pytest.fixture(scope="module")
def small_esrgan(tmp_path_factory):
    from safetensors.torch import save_file

    from gcl.synth.generators.esrgan import ESRGAN_FILE, RRDBNet

    torch.manual_seed(0)
    net = RRDBNet(blocks=1)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.5)  # centred outputs: views visible in uint8
    root = tmp_path_factory.mktemp("esrgan1")
    save_file(net.state_dict(), str(root / ESRGAN_FILE))
    return root


def synth(args):
    return CliRunner().invoke(main, ["run", "--no-progress"] + [str(a) for a in args])


def test_residual_run_records_residual_and_cost(tmp_path, small_esrgan, cifar_test_npz):
    out = tmp_path / "res"
    base = ["--generator", "esrgan", "--model", small_esrgan, "--input", cifar_test_npz, "--limit", 6, "--resolution", 32,
            "--recipe", "noise(strength=0..0.3)", "--output", out]
    res = synth(base + ["--residual"])
    assert res.exit_code == 0, res.output
    (mpath,) = out.glob("*.manifest.json")
    m = json.loads(mpath.read_text())
    assert m["residual"] is True and m["generator"]["family"] == "esrgan"
    assert m["cost"]["images"] == 6 and m["cost"]["flops_per_image"] > 1e6 and m["cost"]["seconds"] > 0
    # the CPU time the sitting got and the machine's load: a slow sitting vs a crowded machine
    assert 0 < m["cost"]["cpu_seconds"] and m["cost"]["load_avg_1m"] >= 0 and m["cost"]["cpus"] >= 1
    assert json.loads((out / "plan.json").read_text())["options"]["residual"] is True
    assert str(small_esrgan) not in mpath.read_text()  # weights identify the model, not where they lie
    samples = [s for p in sorted(out.glob("*.tar")) for s in read_shard(p)]
    assert all(json.loads(s["json"])["residual"] is True for s in samples)
    changed = synth(base)  # the same plan without --residual is another plan
    assert changed.exit_code != 0 and "residual" in changed.output


def test_residual_zero_strength_views_are_the_input(tmp_path, small_esrgan, cifar_test_npz):
    out = tmp_path / "zero"
    res = synth(["--generator", "esrgan", "--model", small_esrgan, "--input", cifar_test_npz, "--limit", 4,
                 "--resolution", 32, "--recipe", "noise(strength=0)", "--residual", "--image-format", "png",
                 "--output", out])
    assert res.exit_code == 0, res.output
    for s in (s for p in sorted(out.glob("*.tar")) for s in read_shard(p)):
        assert s["view0.png"] == s["orig.png"]  # PNG is lossless: byte-equal images


def test_family_default_recipe(tmp_path, small_esrgan, cifar_test_npz):
    out = tmp_path / "default"
    assert synth(["--generator", "esrgan", "--model", small_esrgan, "--input", cifar_test_npz, "--limit", 2,
                  "--resolution", 32, "--views", 1, "--output", out]).exit_code == 0
    (mpath,) = out.glob("*.manifest.json")
    assert json.loads(mpath.read_text())["recipe"]["spec"] == "noise(strength=0.25..1.0)"


@pytest.mark.parametrize("extra, msg", [
    (["--recipe", "sdedit(strength=0.5, steps=4)"], "needs --generator diffusion"),
    (["--recipe", "sdedit(strength=0.5, steps=4); noise(strength=0.1)"], "must be the last op"),
    (["--recipe", "resample(ratio=1.5, steps=4)"], "must lie in [0, 1]"),
])
def test_generator_op_errors_are_one_line(tmp_path, small_esrgan, cifar_test_npz, extra, msg):
    res = synth(["--generator", "esrgan", "--model", small_esrgan, "--input", cifar_test_npz, "--limit", 2,
                 "--resolution", 32, "--output", tmp_path / "o"] + extra)
    assert res.exit_code != 0 and msg in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_vqgan_as_typed_offline_fails_fast_in_one_line(tmp_path, cifar_test_npz):
    """`gcl-synth run --generator vqgan` (default hub model) with no network and HF_HUB_OFFLINE unset."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty hub cache
    code = ("import time, sys; from gcl.synth.generators import load_generator, GeneratorLoadError; t = time.time()\n"
            "try:\n    load_generator('vqgan', None)\nexcept GeneratorLoadError as e:\n"
            "    print(f'{time.time() - t:.2f}'); print(e)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    seconds, message = proc.stdout.strip().splitlines()
    assert float(seconds) < 2.0, seconds  # import time excluded: the load itself must not hang
    assert "--model DIR" in message and "amused/amused-256" in message


def test_cli_vqgan_as_typed_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    t = time.time()
    res = synth(["--generator", "vqgan", "--output", tmp_path / "o"])
    assert res.exit_code != 0 and "--model DIR" in res.output and "amused/amused-256" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert time.time() - t < 2.0
