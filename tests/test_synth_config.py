"""gcl-synth run --config FILE: a file of typed run options gives the run its flags would, the
command line wins over it, where the set goes and runs is never read from it, a bad file is one
usage line, and a study hands every shard set to gcl-synth this way (no option becomes a flag)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"

from synthcall import resolved  # noqa: E402

from gcl.eval.study.config import load_study  # noqa: E402
from gcl.eval.study.runs import SYNTH_CONFIG, synth_command, synth_config  # noqa: E402
from gcl.synthconfig import SynthConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ATTACKER = "tcp://198.51.100.7:8786"

# every option a file may set, each away from its default, and the same run as typed flags
EVERY_OPTION = {"generator": "taef2", "model": "some/model", "pixel_range": "0-1", "input": "in.npz", "limit": 40,
                "per_class": 2, "label_key": "cls", "views": 3, "resolution": 32, "recipe": "noise(strength=0.3)",
                "residual": True, "seed": 7, "shard_size": 5, "batch_size": 4, "workers": 2, "image_format": "png",
                "quality": 90, "device": "cpu", "dtype": "float32", "retries": 1, "max_error_rate": 0.2}
AS_FLAGS = ["--generator", "taef2", "--model", "some/model", "--pixel-range", "0-1", "--input", "in.npz", "--limit", "40",
            "--per-class", "2", "--label-key", "cls", "--views", "3", "--resolution", "32", "--recipe",
            "noise(strength=0.3)", "--residual", "--seed", "7", "--shard-size", "5", "--batch-size", "4",
            "--processes", "2", "--image-format", "png", "--quality", "90", "--device", "cpu", "--dtype", "float32",
            "--retries", "1", "--max-error-rate", "0.2"]


def _config(tmp_path: Path, data, name: str = "options.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_config_file_gives_the_run_its_flags_would(tmp_path, monkeypatch):
    assert set(EVERY_OPTION) == set(SynthConfig.model_fields) - {"reference"}  # a new option is added here too
    out = str(tmp_path / "out")
    via_file, said, code = resolved(["--config", _config(tmp_path, EVERY_OPTION), "--output", out], monkeypatch)
    assert code == 0, said
    via_flags, said, code = resolved([*AS_FLAGS, "--output", out], monkeypatch)
    assert code == 0, said
    assert via_file == via_flags
    assert (via_file.generator, via_file.workers, via_file.input, via_file.views) == ("taesd", 2, "in.npz", 3)
    reference = _config(tmp_path, "{}", "published.json")
    with_reference, said, code = resolved(["--config", _config(tmp_path, {"reference": str(reference)}), "--output", out],
                                          monkeypatch)
    assert code == 0 and with_reference.reference == str(reference), said


def test_an_empty_config_file_changes_nothing(tmp_path, monkeypatch):
    out = ["--output", str(tmp_path / "out")]
    plain, _, _ = resolved(out, monkeypatch)
    for text in ("", "{}\n", "# nothing set\n"):
        via_file, said, code = resolved(["--config", _config(tmp_path, text), *out], monkeypatch)
        assert code == 0 and via_file == plain, said


def test_options_typed_on_the_command_line_win_over_the_file(tmp_path, monkeypatch):
    config = _config(tmp_path, {"views": 3, "workers": 2, "seed": 1, "input": "file.npz"})
    cfg, said, _ = resolved(["--config", config, "--views", "5", "--processes", "4", "--input", "typed.npz"], monkeypatch)
    assert (cfg.views, cfg.workers, cfg.seed, cfg.input) == (5, 4, 1, "typed.npz"), said
    cfg, said, _ = resolved(["--config", config, "--workers", "3"], monkeypatch)  # the earlier name of --processes
    assert (cfg.views, cfg.workers, cfg.input) == (3, 3, "file.npz"), said
    cfg, said, _ = resolved(["--config", config, "--views", "2"], monkeypatch)  # typed, even when it is the default
    assert cfg.views == 2, said


@pytest.mark.parametrize("data,message", [
    ({"scheduler": ATTACKER}, "scheduler is the command line's to set"),
    ({"output": "/elsewhere", "overwrite": True}, "output, overwrite is the command line's to set"),
    ({"num_nodes": 2}, "num_nodes is the command line's to set"),
    ({"viewz": 2}, "unknown key(s) viewz"),
    ({"views": "2"}, "key 'views'"),
    ({"views": 65}, "key 'views'"),
    ({"residual": "--overwrite"}, "key 'residual'"),
    ({"max_error_rate": float("nan")}, "key 'max_error_rate'"),
    ({"recipe": "noise\n--scheduler=x"}, "key 'recipe'"),
    ({"reference": "no-such-manifest.json"}, "no-such-manifest.json is not a file"),
    (["views", 2], "must be a mapping"),
    ("views: [2\n", "is not valid YAML or JSON"),
    ("views: 2\nviews: 3\n", "is not valid YAML or JSON"),
    (None, "config file not found"),
])
def test_a_bad_config_file_is_one_usage_line_and_nothing_runs(tmp_path, monkeypatch, data, message):
    path = tmp_path / "missing.yaml" if data is None else _config(tmp_path, data)
    cfg, said, code = resolved(["--config", path, "--output", str(tmp_path / "out")], monkeypatch)
    assert cfg is None and code == 2, said
    error = [line for line in said.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0] and str(path) in error[0], said
    assert "Traceback" not in said


def test_a_text_value_that_reads_like_a_flag_stays_that_options_value(tmp_path, monkeypatch):
    data = {"recipe": f"--scheduler={ATTACKER}", "model": "--overwrite", "input": "--output=/elsewhere"}
    out = str(tmp_path / "out")
    cfg, said, code = resolved(["--config", _config(tmp_path, data), "--output", out], monkeypatch)
    assert code == 0, said
    assert (cfg.recipe, cfg.model, cfg.input) == (data["recipe"], "--overwrite", "--output=/elsewhere")
    assert cfg.scheduler is None and cfg.overwrite is False and cfg.output == out


def test_every_shipped_shard_set_reaches_gcl_synth_as_its_study_file_says(tmp_path, monkeypatch):
    """For each plain shard set of each shipped study: the study's gcl-synth call carries only the
    runner's flags, and the run its config file gives has every option the study file set and
    gcl-synth's defaults for the rest."""
    defaults, _, _ = resolved(["--output", str(tmp_path)], monkeypatch)
    runner_flags = ("--config=", "--output=", "--name=", "--no-progress")
    checked = 0
    for path in sorted((REPO / "studies").glob("*/study.yaml")):
        study = load_study(path)
        for name, options in study.shard_sets.items():
            if "merge" in options:
                continue
            args = synth_command(study, name)[4:]
            assert all(a.startswith(runner_flags) for a in args), args
            assert f"--config={study.shard_dir(name) / SYNTH_CONFIG}" in args
            config = tmp_path / f"{study.name}-{name}.json"
            config.write_text(json.dumps(synth_config(study.synth[name])))
            args = [f"--config={config}" if a.startswith("--config=") else a for a in args]
            cfg, said, code = resolved(args, monkeypatch)
            assert code == 0, (path.parent.name, name, said)
            for key in SynthConfig.model_fields:
                want = options.get(key, getattr(defaults, key))
                want = "taesd" if want == "taef2" and key == "generator" else want
                assert getattr(cfg, key) == want, (path.parent.name, name, key, getattr(cfg, key), want)
            assert (cfg.output, cfg.name) == (str(study.shard_dir(name)), name)
            checked += 1
    assert checked >= 10, checked


def test_a_config_file_run_writes_the_shards_its_flags_write(tmp_path, cifar_test_npz, taef2_dir):
    """The real TAEF2 on real images: `gcl-synth run --config FILE --output OUT --views 1` writes
    the same shard bytes, keys and record as the same options typed, and `--views` beats the file."""
    from click.testing import CliRunner

    from gcl.io import sha256_file
    from gcl.manifest import load_manifest
    from gcl.shards import read_shard
    from gcl.synth.cli import main

    options = {"generator": "taef2", "model": str(taef2_dir), "input": str(cifar_test_npz), "limit": 8, "views": 3,
               "resolution": 32, "recipe": "noise(strength=0.5)", "residual": True, "shard_size": 4, "batch_size": 4}
    config = _config(tmp_path, options)
    typed = ["--generator", "taef2", "--model", taef2_dir, "--input", cifar_test_npz, "--limit", 8, "--resolution", 32,
             "--recipe", "noise(strength=0.5)", "--residual", "--shard-size", 4, "--batch-size", 4]
    outs = {"file": tmp_path / "via-file", "typed": tmp_path / "via-flags"}
    for how, args in (("file", ["--config", config]), ("typed", typed)):
        res = CliRunner().invoke(main, ["run", "--no-progress", *map(str, args), "--output", str(outs[how]),
                                        "--name", "set", "--views", "1"])
        assert res.exit_code == 0, res.output
    tars = {how: sorted(out.glob("*.tar")) for how, out in outs.items()}
    assert [p.name for p in tars["file"]] == [p.name for p in tars["typed"]] == ["set-000000.tar", "set-000001.tar"]
    assert [sha256_file(p) for p in tars["file"]] == [sha256_file(p) for p in tars["typed"]]
    families = [s for p in tars["file"] for s in read_shard(p)]
    assert len(families) == 8 and all({"orig.jpg", "view0.jpg"} <= set(s) and "view1.jpg" not in s for s in families)
    made = {how: load_manifest(out / "set.manifest.json") for how, out in outs.items()}
    assert made["file"]["views"] == 1 and made["file"]["generator"] == made["typed"]["generator"]
    assert [s["sha256"] for s in made["file"]["shards"]] == [s["sha256"] for s in made["typed"]["shards"]]


def test_a_device_or_a_huge_file_as_config_is_one_line_without_reading_it_whole(tmp_path, monkeypatch):
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(8 << 30)  # 8 GiB, sparse: reading it whole would take the machine's memory
    for path in (huge, "/dev/zero"):
        cfg, said, code = resolved(["--config", path, "--output", str(tmp_path / "out")], monkeypatch)
        assert cfg is None and code == 2 and "over the 1 MiB cap" in said and "Traceback" not in said, said
