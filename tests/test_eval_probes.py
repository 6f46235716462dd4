"""kNN / linear probes on planted structure, class checks, feature cache, CLI errors, results, compare."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gcl.eval.cli import main
from gcl.labelled import LabelledSet
from gcl.eval.features import cached_features, raw_pixel_encoder
from gcl.knn import knn_accuracy
from gcl.eval.linear import LinearRecipe, linear_accuracy, load_recipe
from gcl.eval.probe import ProbeError, check_classes

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def planted(n_per_class=60, classes=10, dim=32, noise=0.6, seed=0):
    """Class c lives around a random unit centre; noise well below the centre separation."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + noise / dim ** 0.5 * torch.randn(len(y), dim, generator=g)
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


def test_knn_recovers_planted_classes():
    xtr, ytr = planted(seed=0)
    xte, yte = planted(n_per_class=30, seed=0)
    acc = knn_accuracy(xtr, ytr, xte[:], yte, 10)
    assert acc["top1"] > 95.0 and acc["top5"] >= acc["top1"]


def test_knn_shuffled_labels_fall_to_chance():
    xtr, ytr = planted(n_per_class=100, seed=1)
    xte, yte = planted(n_per_class=100, seed=1)
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(3))]
    acc = knn_accuracy(xtr, shuffled, xte, yte, 10)
    assert 3.0 < acc["top1"] < 18.0  # chance is 10%; 1000 test points, binomial sd ~1%
    assert 35.0 < acc["top5"] < 65.0  # chance top-5 is 50%


def _wu_knn_scores(train, labels, test, num_classes, k, t):
    """The weighted vote written out (Wu et al. 2018): sum of exp(cos/T) over the k nearest, per class."""
    train, test = torch.nn.functional.normalize(train, dim=1), torch.nn.functional.normalize(test, dim=1)
    sim, idx = (test @ train.T).topk(k, dim=1)
    return torch.zeros(len(test), num_classes).scatter_add_(1, labels[idx], (sim / t).exp())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_from_lightly_gives_the_written_out_vote(seed):
    """gcl's kNN runs lightly's knn_predict: on a fixed feature set its predictions and top-1/top-5
    equal the vote computed directly (noisy classes, so many queries are close calls)."""
    from gcl.knn import knn_predict, topk_accuracy

    x, y = planted(n_per_class=60, noise=2.5, seed=seed)
    xtr, ytr, xte, yte = x[:400], y[:400], x[400:], y[400:]
    scores = _wu_knn_scores(xtr, ytr, xte, 10, 20, 0.07)
    ranked = knn_predict(xtr, ytr, xte, 10, k=20, temperature=0.07, chunk_size=64)  # several chunks
    assert torch.equal(ranked[:, 0], scores.argmax(1))
    direct, ours = topk_accuracy(scores, yte), knn_accuracy(xtr, ytr, xte, yte, 10)
    assert 20.0 < ours["top1"] < 95.0  # a set where the vote decides, not a trivially separable one
    assert ours == pytest.approx(direct, abs=1e-9)


def test_linear_probe_separates_separable_toy_set():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4, generator=g)
    x = torch.randn(2000, 16, generator=g)
    logits = x @ w
    top2 = logits.topk(2, dim=1).values
    x = x[top2[:, 0] - top2[:, 1] > 1.0][:800]  # keep a margin: separable with room to spare
    y = (x @ w).argmax(1)
    acc = linear_accuracy(x[:600], y[:600], x[600:], y[600:], 4, LinearRecipe(epochs=60, milestones=[40, 50]))
    assert acc["top1"] > 95.0 and acc["train_top1"] > 97.0


def test_linear_probe_shuffled_labels_near_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 16, generator=g)
    y = torch.randint(0, 4, (1000,), generator=g)
    acc = linear_accuracy(x[:600], y[:600], x[600:], y[600:], 4, LinearRecipe(epochs=10, milestones=[6, 8]))
    assert acc["top1"] < 35.0  # chance 25%


def test_linear_recipe_defaults_and_yaml(tmp_path):
    r = LinearRecipe()
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.milestones) == (100, 256, 0.1, 0.9, 0.0, [60, 80])
    p = tmp_path / "r.yaml"
    p.write_text("linear:\n  epochs: 7\n  schedule: cosine\n")
    r = load_recipe(str(p), lr=0.05)
    assert (r.epochs, r.schedule, r.lr) == (7, "cosine", 0.05)
    p.write_text("optimizer: {name: sgd, batch_size: 128, lr: 0.2, weight_decay: 0}\n"
                 "scheduler: {name: step, lr_decay_steps: [6, 8]}\nmax_epochs: 10\n")  # solo-learn's format
    r = load_recipe(str(p))
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.schedule) == (10, 128, 0.2, [6, 8], "step")
    p.write_text("linear:\n  epoch: 7\n")
    with pytest.raises(ValueError, match="unknown linear recipe keys"):
        load_recipe(str(p))


def _set(labels, names):
    return LabelledSet(np.zeros((len(labels), 4, 4, 3), np.uint8), np.asarray(labels), names, "x")


def test_class_set_mismatch_is_an_error():
    assert check_classes(_set([0, 1], ["a", "b"]), _set([1], ["a", "b"])) == 2
    with pytest.raises(ProbeError, match="class sets differ"):
        check_classes(_set([0, 1], ["a", "b"]), _set([0, 1], ["a", "c"]))
    with pytest.raises(ProbeError, match="never occur"):
        check_classes(_set([0, 1], None), _set([2], None))


def _npz(path, n, seed, names=("a", "b", "c"), labels=True, size=8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(names), n)
    # Class-coloured images: class c is bright in channel c, so raw-pixel kNN must get them right.
    x = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    x[np.arange(n), :, :, y] += 180
    data = {"images": x}
    if labels:
        data.update(labels=y, class_names=np.array(names))
    np.savez(path, **data)
    return path


def test_cli_knn_and_linear_raw_pixels_write_results(tmp_path):
    tr, te = _npz(tmp_path / "tr.npz", 90, 0), _npz(tmp_path / "te.npz", 30, 1)
    out = tmp_path / "res"
    r = CliRunner().invoke(main, ["knn", "--raw-pixels", "--eval-train", str(tr), "--eval-test", str(te), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "top-1 100.00%" in r.output and "top-5" in r.output
    r = CliRunner().invoke(main, ["linear", "--raw-pixels", "--eval-train", str(tr), "--eval-test", str(te), "--output", str(out),
                                  "--epochs", "20"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert {rec["probe"] for rec in recs} == {"knn", "linear"}
    assert all(rec["n_test"] == 30 and rec["num_classes"] == 3 for rec in recs)
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| time | probe") and len(table) == 4  # header, rule, 2 rows
    big = _npz(tmp_path / "b.npz", 30, 1, size=16)
    r = CliRunner().invoke(main, ["knn", "--raw-pixels", "--eval-train", str(tr), "--eval-test", str(big), "--resolution", "8",
                                  "--output", str(out)])
    assert r.exit_code == 0 and "top-1 100.00%" in r.output, r.output
    # the earlier spellings still work (unlisted): --train/--test/--limit-*/--out
    r = CliRunner().invoke(main, ["knn", "--raw-pixels", "--train", str(tr), "--test", str(te), "--limit-test", "10",
                                  "--out", str(tmp_path / "old")])
    assert r.exit_code == 0 and "(90 train / 10 test images)" in r.output, r.output
    assert len(list((tmp_path / "old").glob("knn-*.json"))) == 1
    assert "--limit-train" not in CliRunner().invoke(main, ["knn", "-h"]).output


def test_knn_states_chance_and_beats_or_not_its_baselines(tmp_path):
    from gcl.backbones import build_backbone

    tr, te = _npz(tmp_path / "tr.npz", 90, 0), _npz(tmp_path / "te.npz", 30, 1)
    torch.manual_seed(1)
    net, _ = build_backbone("resnet20", cifar_stem=True)
    info = {"method": "simclr", "backbone": "resnet20", "cifar_stem": True, "resolution": 16,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"gcl": info, "epoch": 0, "global_step": 1,
                "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, run / "checkpoints" / "last.ckpt")
    r = CliRunner().invoke(main, ["knn", "--ckpt", str(run), "--eval-train", str(tr), "--eval-test", str(te)])
    assert r.exit_code == 0, r.output
    labels = np.load(te)["labels"]
    chance = 100 * np.bincount(labels).max() / len(labels)
    assert f"chance {chance:.1f}%: always answering the most frequent class of the 30 test images (3 classes)" in r.output
    rec = json.loads(next((run / "eval").glob("knn-*.json")).read_text())
    assert set(rec["baselines"]) == {"raw pixels", "random-init resnet20"}
    assert rec["baselines"]["raw pixels"] == 100.0  # class-coloured images: pixels alone get every one right
    verdict = "above" if all(rec["top1"] > v for v in rec["baselines"].values()) else "NOT above"
    assert f"raw pixels 100.00%" in r.output and f"this encoder is {verdict} them" in r.output
    assert len(list((run / "features").glob("*.safetensors"))) == 4  # the run's and the random-init features
    r = CliRunner().invoke(main, ["knn", "--ckpt", str(run), "--eval-train", str(tr), "--eval-test", str(te),
                                  "--no-baselines"])
    assert r.exit_code == 0 and "baselines" not in r.output


def test_cli_user_errors_are_one_line(tmp_path):
    tr = _npz(tmp_path / "tr.npz", 20, 0)
    other = _npz(tmp_path / "o.npz", 20, 1, names=("a", "b", "z"))
    unl = _npz(tmp_path / "u.npz", 20, 2, labels=False)
    big = _npz(tmp_path / "b.npz", 20, 3, size=16)
    empty = tmp_path / "emptyrun"
    empty.mkdir()
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    cases = [
        (["knn", "--raw-pixels", "--eval-train", str(tr), "--eval-test", str(other)], "class sets differ"),
        (["knn", "--raw-pixels", "--eval-train", str(tr), "--eval-test", str(unl)], "no labels"),
        (["knn", "--eval-train", str(tr), "--eval-test", str(tr)], "exactly one of"),
        (["knn", "--raw-pixels", "--eval-train", str(tr), "--eval-test", str(big)], "pass --resolution"),
        (["knn", "--random-init", "--eval-train", str(tr), "--eval-test", str(tr)], "needs --backbone"),
        (["knn", "--ckpt", str(empty), "--eval-train", str(tr), "--eval-test", str(tr)], "no .ckpt file"),
        (["knn", "--ckpt", str(bad), "--eval-train", str(tr), "--eval-test", str(tr)], "not a gcl-train checkpoint"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(main, args + ["--output", str(tmp_path / "o")])
        assert r.exit_code != 0 and msg in r.output, (args, r.output)
        assert "Traceback" not in r.output and not isinstance(r.exception, (KeyError, TypeError, AttributeError))


def test_feature_cache_hit(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    y = np.arange(10)
    enc = raw_pixel_encoder()
    f1, hit1 = cached_features(enc, x, y, tmp_path)
    f2, hit2 = cached_features(enc, x, y, tmp_path)
    assert (hit1, hit2) == (False, True) and torch.equal(f1, f2)
    _, hit3 = cached_features(enc, x[::-1].copy(), y, tmp_path)  # different data -> new entry
    assert not hit3 and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_compare_table_and_plot(tmp_path):
    for name, gp, knn in (("a", 0.0, [20, 30, 35]), ("b", 0.5, [22, 33, 40])):
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"method": "simclr", "shards": "m/cifar.json", "gen_prob": gp,
                                                  "epochs": 3}))
        rows = ["epoch,step,train_loss,knn_top1,linear_top1"]
        for ep, v in enumerate(knn):
            rows += [f"{ep},{ep * 10},1.0,,", f"{ep},{ep * 10 + 9},,{v},"]
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "b" / "eval").mkdir()
    (tmp_path / "b" / "eval" / "linear-test-x.json").write_text(json.dumps({"probe": "linear", "top1": 51.234}))
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("| a ") or ln.startswith("| b ")]
    assert lines[0].split("|")[2:10] == [" simclr ", " cifar.json ", " 0.0 ", " 3/3 ", " 35.00 ", " online kNN, ? bank / ? test ",
                                         " - ", " - "]
    assert " 40.00 " in lines[1] and " 51.23 " in lines[1] and "note:" not in r.output  # one way of measuring each
    png = tmp_path / "c" / "compare.png"
    assert (tmp_path / "c" / "compare.md").read_text().splitlines()[2] == lines[0]

    # an offline kNN result next to an online one: each number says how it was measured, and the mix is named
    (tmp_path / "b" / "eval" / "knn-test-x.json").write_text(json.dumps(
        {"probe": "knn", "top1": 41.5, "n_train": 5000, "n_test": 1000, "params": {"k": 20, "T": 0.07}}))
    (tmp_path / "a" / "run.json").write_text(json.dumps({"method": "simclr", "shards": "m/cifar.json", "gen_prob": 0.0,
                                                         "epochs": 3, "eval_sizes": {"bank": 64, "test": 64}}))
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])  # default: the first run's folder
    assert r.exit_code == 0, r.output
    assert "| 35.00 | online kNN, 64 bank / 64 test |" in r.output
    assert "| 41.50 | gcl-eval kNN k=20, 5000 bank / 1000 test |" in r.output
    assert "note: the kNN column mixes 2 ways of measuring" in r.output and "linear column mixes" not in r.output
    assert (tmp_path / "a" / "compare.png").is_file() and (tmp_path / "a" / "compare.md").is_file()
    from PIL import Image

    assert Image.open(png).size == (840, 540)


def test_cli_baselines_are_the_random_init_and_raw_pixel_floors(tmp_path):
    tr, te = _npz(tmp_path / "tr.npz", 90, 0), _npz(tmp_path / "te.npz", 30, 1)
    out = tmp_path / "floors"
    r = CliRunner().invoke(main, ["baselines", "--eval-train", str(tr), "--eval-test", str(te), "--backbone", "resnet20",
                                  "--output", str(out)])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("knn ")]
    assert len(lines) == 2 and "top-1 100.00%" in lines[1], lines  # raw pixels separate the class colours
    assert sorted(json.loads(p.read_text())["probe"] for p in out.glob("*.json")) == ["knn", "knn"]


def test_knn_with_other_settings_keeps_the_earlier_result_and_compare_aligns_runs(tmp_path):
    """A second kNN with another --eval-limit is kept beside the first (same settings replace their
    own file); two runs evaluated both ways, in different orders, compare without a mixed-protocol note;
    results.md counts epochs from 1, as compare does."""
    tr, te = _npz(tmp_path / "tr.npz", 90, 0), _npz(tmp_path / "te.npz", 30, 1)
    data = ["--raw-pixels", "--eval-train", str(tr), "--eval-test", str(te)]
    runs = {}
    for name, limits in (("t0", ("20", "30")), ("t1", ("30", "20"))):
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"method": "simclr", "shards": "m.json", "gen_prob": 0.5, "epochs": 1}))
        for limit in limits:
            r = CliRunner().invoke(main, ["knn", *data, "--eval-limit", limit, "--output", str(run / "eval")])
            assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["knn", *data, "--eval-limit", limits[-1], "--output", str(run / "eval")])
        runs[name] = sorted(p.name for p in (run / "eval").glob("knn-*.json"))
        assert len(runs[name]) == 2, runs[name]  # one file per setting: 20 and 30 test images
        records = [json.loads((run / "eval" / n).read_text()) for n in runs[name]]
        assert sorted(rec["n_test"] for rec in records) == [20, 30]
        assert records[0]["train"] == "../../tr.npz"  # relative to the results folder, never absolute
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "t1"), str(tmp_path / "t0")])
    assert r.exit_code == 0 and "mixes" not in r.output, r.output
    shown = [ln.split("|")[7].strip() for ln in r.output.splitlines() if ln.startswith(("| t0 ", "| t1 "))]
    assert len(shown) == 2 and shown[0] == shown[1] and shown[0].startswith("gcl-eval kNN k=20"), shown

    from gcl.eval.results import append_row

    append_row(tmp_path / "r.md", {"probe": "knn", "epoch": 0, "top1": 1.0})
    assert (tmp_path / "r.md").read_text().splitlines()[2].split("|")[5].strip() == "1"


def test_compare_falls_back_to_the_online_numbers_both_runs_share(tmp_path):
    """The README's flow: gcl-eval knn on one run only. Both runs also measured kNN online the same
    way, so compare shows the online numbers for both instead of a mixed column."""
    for name in ("p05", "p0"):
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"method": "simclr", "shards": "m.json", "gen_prob": 0.5, "epochs": 2,
                                                  "eval_sizes": {"bank": 2000, "test": 2000}}))
        (run / "metrics.csv").write_text("epoch,step,knn_top1\n0,4,30.0\n1,9,35.5\n")
    (tmp_path / "p05" / "eval").mkdir()
    (tmp_path / "p05" / "eval" / "knn-test-x.json").write_text(json.dumps(
        {"probe": "knn", "top1": 41.5, "n_train": 2000, "n_test": 2000, "params": {"k": 20, "T": 0.07}}))
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "p05"), str(tmp_path / "p0")])
    assert r.exit_code == 0 and "mixes" not in r.output, r.output
    assert r.output.count("| 35.50 | online kNN, 2000 bank / 2000 test |") == 2, r.output
