"""Contact sheet geometry, shard reading, view statistics and the gcl-eval inspect/viewstats commands."""

import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from gcl.eval.sheet import Family, contact_sheet, format_op, read_families
from gcl.eval.viewstats import PSNR_CAP, compute_view_stats, group_key, psnr, ssim
from gcl.eval.cli import main as gcl_eval
from gcl.manifest import load_manifest, write_manifest
from gcl.shards import Sample, ShardWriter, encode_image, shard_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
COLORS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (200, 30, 200)]


def solid(color, size=32):
    return np.full((size, size, 3), color, np.uint8)


def test_sheet_pixel_size_and_grid():
    rows, views = 3, 4
    fams = [Family(f"k{r}", solid(COLORS[0]), [solid(COLORS[1 + v]) for v in range(views)],
                   [{"view": v, "ops": [{"op": "noise", "strength": 0.1 * v}]} for v in range(views)],
                   {"class_name": "cat"}, 3) for r in range(rows)]
    sheet, lay = contact_sheet(fams)
    assert (lay.rows, lay.cols, lay.tile) == (rows, 1 + views, 128)  # 32 px shown 4x
    # Width: pad + 5 x (128 + pad); height: header + 3 x (cell + pad) + pad, cell = tile + 2 caption lines.
    assert lay.caption_lines == 2 and sheet.size == (8 + 5 * 136, lay.header_h + 3 * (128 + 4 + 2 * 16 + 8) + 8)
    px = np.asarray(sheet)
    for r in range(rows):
        for c in range(1 + views):
            x0, y0, x1, y1 = lay.image_box(r, c)
            assert tuple(px[(y0 + y1) // 2, (x0 + x1) // 2]) == COLORS[c]  # the right image in each cell
            assert tuple(px[y0 + 1, x0 + 1]) == COLORS[c] and tuple(px[y1 - 2, x1 - 2]) == COLORS[c]
            assert tuple(px[y0 - 2, x0 + 5]) == (255, 255, 255)  # gap above each cell is background
            # Caption area under views holds dark text pixels.
            if c:
                cap = px[y1 + 4:y1 + 4 + lay.line_h, x0:x1]
                assert (cap.min(axis=2) < 100).sum() > 20


def test_sheet_wraps_long_captions_and_large_images():
    ops = [{"op": "mask", "fill": "noise", "ratio": 0.25}, {"op": "noise", "strength": 0.5}]
    assert format_op(ops[0]) == "mask r=0.25 fill=noise"
    fam = Family("x" * 60, solid(COLORS[0], 300), [solid(COLORS[1], 300)], [{"ops": ops}])
    sheet, lay = contact_sheet([fam], font_size=20)
    assert lay.tile == 256 and lay.caption_lines >= 2  # large images shrink to the max tile


def _write_shards(tmp_path, n=6, k=3, sizes=(0.0, 10.0, 40.0), manifest=True, labelled=True):
    """Shards whose views are the original plus Gaussian noise of a known sigma, recorded as ops."""
    rng = np.random.default_rng(0)
    out = tmp_path / "shards"
    out.mkdir(parents=True)
    w = ShardWriter(out / shard_name("toy", 0))
    for i in range(n):
        orig = rng.integers(40, 215, (32, 32, 3)).astype(np.uint8)
        imgs, recs = {"orig": encode_image(orig, "png", 95)}, []
        for v in range(k):
            sigma = sizes[v % len(sizes)]
            view = np.clip(orig + rng.normal(0, sigma, orig.shape), 0, 255).astype(np.uint8) if sigma else orig
            imgs[f"view{v}"] = encode_image(view, "png", 95)
            recs.append({"view": v, "seed": v, "ops": [{"op": "noise", "strength": sigma / 100}]})
        w.write(Sample(f"s{i:03d}", imgs, {"views": recs, "class_name": "c", "source": f"x/{i}"}, label=i % 2 if labelled else None, fmt="png"))
    w.close()
    if not manifest:
        return out
    path = tmp_path / "m" / "toy.json"
    write_manifest({"name": "toy", "shards": [{"url": shard_name("toy", 0), "samples": n, "bytes": 0, "sha256": ""}],
                    "class_names": ["a", "b"]}, path, out)
    return path


def test_read_families_from_manifest_tar_and_folder(tmp_path):
    man = _write_shards(tmp_path)
    for src in (str(man), str(tmp_path / "shards"), str(tmp_path / "shards" / shard_name("toy", 0))):
        fams = read_families(src, 4)
        assert [f.key for f in fams] == ["s000", "s001", "s002", "s003"]
        assert len(fams[0].views) == 3 and fams[0].records[2]["ops"][0]["strength"] == 0.4
    sampled = read_families(str(man), 3, seed=1)
    assert len(sampled) == 3 and len({f.key for f in sampled}) == 3


def test_psnr_identical_is_capped_and_ssim_is_one():
    a = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    assert psnr(a, a) == PSNR_CAP and math.isinf(psnr(a, a, cap=None))
    assert ssim(a, a) == pytest.approx(1.0)
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert 50 < psnr(a, b) < PSNR_CAP


def test_view_stats_group_by_op_and_strength(tmp_path):
    fams = read_families(str(_write_shards(tmp_path)), 100)
    stats = compute_view_stats(fams)
    groups = {g["group"]: g for g in stats["groups"]}
    assert list(groups) == ["noise strength 0.00-0.10", "noise strength 0.10-0.20", "noise strength 0.40-0.50"]
    psnrs = [g["psnr_mean"] for g in groups.values()]
    assert psnrs[0] == PSNR_CAP and psnrs[0] > psnrs[1] > psnrs[2]
    assert [g["n"] for g in groups.values()] == [6, 6, 6]
    assert group_key({"ops": [{"op": "mix", "ratio": 0.23, "partner": "abc"}, {"op": "mask", "ratio": 0.1,
                                                                          "fill": "codes"}]}) == \
        "mix ratio 0.20-0.30 + mask ratio 0.10-0.20 fill=codes"


def test_inspect_and_viewstats_commands(tmp_path):
    man = _write_shards(tmp_path)
    png = tmp_path / "pictures" / "sheet.png"
    r = CliRunner().invoke(gcl_eval, ["inspect", str(man), "--output", str(tmp_path / "pictures"), "--rows", "4"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    assert Image.open(png).size[0] == 8 + 4 * 136  # original + 3 views
    cwd = os.getcwd()
    (tmp_path / "cwd").mkdir()
    os.chdir(tmp_path / "cwd")
    try:  # without --output: next to the shards, never in the current folder
        r = CliRunner().invoke(gcl_eval, ["inspect", str(man), "--rows", "2"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0 and (tmp_path / "shards" / "sheet.png").is_file(), r.output
    assert not list((tmp_path / "cwd").iterdir())
    r = CliRunner().invoke(gcl_eval, ["inspect", str(tmp_path / "shards"), "--rows", "2", "--output",
                                      str(tmp_path / "pictures" / "folder.png")])  # a shard folder, a .png path
    assert r.exit_code == 0 and (tmp_path / "pictures" / "folder.png").is_file(), r.output
    before = load_manifest(man)
    r = CliRunner().invoke(gcl_eval, ["viewstats", str(man), "--samples", "5"])
    assert r.exit_code == 0, r.output
    assert "| noise strength 0.40-0.50 | 5 |" in r.output
    after = load_manifest(man)
    assert after["view_stats"]["families"] == 5 and after["view_stats"]["views"] == 15
    assert {k: v for k, v in after.items() if k != "view_stats"} == before  # other fields kept
    r = CliRunner().invoke(gcl_eval, ["inspect", str(tmp_path / "nothing"), "--output", str(png)])
    assert r.exit_code != 0 and "no shards found" in r.output and "Traceback" not in r.output


def test_probe_on_labelled_shards_and_error_on_unlabelled(tmp_path):
    from gcl.eval.cli import main

    man = _write_shards(tmp_path / "l")
    tar = str(tmp_path / "l" / "shards" / shard_name("toy", 0))
    r = CliRunner().invoke(main, ["knn", "--raw-pixels", "--eval-train", str(man), "--eval-test", tar,
                                  "--output", str(tmp_path / "o")])
    assert r.exit_code == 0 and "(6 train / 6 test images)" in r.output, r.output
    # a folder of shards is shards (read through the core's parser), not an image folder
    r = CliRunner().invoke(main, ["knn", "--raw-pixels", "--eval-train", str(tmp_path / "l" / "shards"),
                                  "--eval-test", tar, "--output", str(tmp_path / "o")])
    assert r.exit_code == 0 and "(6 train / 6 test images)" in r.output, r.output
    unl = _write_shards(tmp_path / "u", labelled=False)
    r = CliRunner().invoke(main, ["knn", "--raw-pixels", "--eval-train", str(man), "--eval-test", str(unl),
                                  "--output", str(tmp_path)])
    assert r.exit_code != 0 and "unlabelled" in r.output and "Traceback" not in r.output
