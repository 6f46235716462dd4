"""Real data: TAEF2 views on CIFAR-10 (PSNR falls with noise strength, preview sheet) and the probes on
a checkpoint in gcl-train's format (built from train.backbones' contract)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TAEF2 = SHARED / "models" / "taef2"
CIFAR_TEST = SHARED / "data" / "cifar10_test.npz"
needs_shared = pytest.mark.skipif(not (TAEF2.is_dir() and CIFAR_TEST.is_file()), reason="../shared data/model missing")


@pytest.fixture(scope="module")
def taef2():
    from gcl.synth.generators import load_generator

    return load_generator("taesd", str(TAEF2))


def _cifar(n, res=64):
    from gcl.inputs import resize_center_crop

    with np.load(CIFAR_TEST) as z:
        return [resize_center_crop(im, res) for im in z["images"][:n]], z["labels"][:n]


@pytest.mark.slow
@needs_shared
def test_psnr_decreases_with_noise_strength_on_taef2_views(taef2):
    from gcl.eval.viewstats import psnr, ssim
    from gcl.synth.recipe import parse_recipe
    from gcl.synth.worker import generate_views

    images, _ = _cifar(8)
    keys = [f"img{i}" for i in range(len(images))]
    means = []
    for s in (0.0, 0.4, 0.8, 1.6):
        views, records = generate_views(taef2, images, keys, parse_recipe(f"noise(strength={s})"), 2, seed=0)
        assert records[0][0]["ops"] == [{"op": "noise", "strength": s}]
        vals = [psnr(im, v) for im, vs in zip(images, views) for v in vs]
        means.append((np.mean(vals), np.mean([ssim(im, v) for im, vs in zip(images, views) for v in vs])))
    psnrs = [m[0] for m in means]
    # Reconstruction alone (strength 0) is ~30 dB at 64 px (taef2 README: 32 dB); noise only lowers it.
    assert 25 < psnrs[0] < 40, psnrs
    assert all(a > b + 0.5 for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert all(a[1] > b[1] for a, b in zip(means, means[1:])), means  # SSIM falls too


@pytest.mark.slow
@needs_shared
def test_preview_writes_sheet_without_shards(tmp_path):
    from PIL import Image

    from gcl.eval.pictures import preview

    out = tmp_path / "p.png"
    r = CliRunner().invoke(preview, ["--model", str(TAEF2), "--input", str(CIFAR_TEST), "--views", "3", "--rows", "2",
                                     "--recipe", "noise(strength=0.2..0.8)", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size[0] == 8 + 4 * 136  # 64 px tiles shown 2x -> 128, original + 3 views
    assert "noise strength" in r.output and list(tmp_path.iterdir()) == [out]
    r = CliRunner().invoke(preview, ["--model", str(TAEF2), "--input", str(CIFAR_TEST), "--recipe", "blur(x=1)"])
    assert r.exit_code != 0 and "unknown op" in r.output and "Traceback" not in r.output
    # the options reach gcl-synth as a typed --config file: a value with a line break is refused before any call
    r = CliRunner().invoke(preview, ["--model", str(TAEF2), "--input", str(CIFAR_TEST), "--recipe", "noise\n--overwrite"])
    assert r.exit_code != 0 and "preview options: key 'recipe'" in r.output and "Traceback" not in r.output


def _fake_run(tmp_path, seed=0):
    """A run folder with a checkpoint in gcl-train's contract: {'gcl': info, 'state_dict': backbone.*}."""
    from gcl.backbones import build_backbone

    torch.manual_seed(seed)
    net, _ = build_backbone("resnet18", cifar_stem=True)
    info = {"method": "simclr", "backbone": "resnet18", "cifar_stem": True, "resolution": 32,
            "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616], "shards": "m/toy.json", "gen_prob": 0.5}
    run = tmp_path / "run1"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"gcl": info, "epoch": 3, "global_step": 30,
                "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}},
               run / "checkpoints" / "last.ckpt")
    (run / "run.json").write_text(json.dumps({"method": "simclr", "shards": "m/toy.json", "gen_prob": 0.5, "epochs": 4}))
    return run


@pytest.mark.slow
@needs_shared
def test_knn_linear_on_checkpoint_run_folder_with_cache(tmp_path):
    from gcl.eval.cli import main

    run = _fake_run(tmp_path)
    args = ["--ckpt", str(run), "--eval-train", str(SHARED / "data" / "cifar10_train.npz"), "--eval-test", str(CIFAR_TEST),
            "--eval-limit", "300"]
    r = CliRunner().invoke(main, ["knn", *args, "--no-baselines"])
    assert r.exit_code == 0, r.output
    assert "knn " in r.output and "top-1" in r.output
    assert len(list((run / "features").glob("*.safetensors"))) == 2  # train + test cached in RUN/features
    r = CliRunner().invoke(main, ["linear", *args, "--epochs", "5"])
    assert r.exit_code == 0, r.output
    assert "(cache)" in r.output  # second probe reuses the features
    recs = {json.loads(p.read_text())["probe"]: json.loads(p.read_text()) for p in (run / "eval").glob("*.json")}
    assert set(recs) == {"knn", "linear"} and recs["knn"]["epoch"] == 3 and recs["knn"]["method"] == "simclr"
    r = CliRunner().invoke(main, ["compare", str(run), "--output", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"| {recs['knn']['top1']:.2f} |" in r.output and "| toy.json | 0.5 |" in r.output


@pytest.mark.slow
@needs_shared
def test_view_stats_feature_cosine_with_checkpoint(tmp_path, taef2):
    from gcl.eval.features import checkpoint_encoder
    from gcl.eval.sheet import Family
    from gcl.eval.viewstats import compute_view_stats
    from gcl.synth.recipe import parse_recipe
    from gcl.synth.worker import generate_views

    enc = checkpoint_encoder(_fake_run(tmp_path))
    images, labels = _cifar(4, res=32)
    keys = [f"k{i}" for i in range(4)]
    views, recs = generate_views(taef2, images, keys, parse_recipe("noise(strength=0.1..1.5)"), 4, seed=0)
    fams = [Family(k, im, v, r) for k, im, v, r in zip(keys, images, views, recs)]
    stats = compute_view_stats(fams, enc)
    assert stats["encoder"].endswith("last.ckpt")
    assert all(-1.0 <= g["cosine_mean"] <= 1.0 for g in stats["groups"])
