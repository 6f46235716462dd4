"""Every crafted member or field, through every gcl command that reads it: a counted skip (per
sample) or one line naming the file (per file), never a traceback, a hang or a huge allocation.
A new crafted case is one entry in tests/hostile.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import hostile

SHARD_COMMANDS = {
    "synth-verify": hostile.synth_verify,
    "eval-inspect": hostile.eval_inspect,
    "eval-knn": hostile.eval_knn,
    "train": hostile.train_shards,
    "train-no-verify": lambda m, tmp: hostile.train_shards(m, tmp, "--no-verify"),
}
NPZ_COMMANDS = {"eval-knn": hostile.eval_knn, "train-input": hostile.train_input, "synth-run": hostile.synth_run}


def _skipped(result, tmp: Path) -> int:
    """Samples the command says it skipped (its log line, or run.json for gcl-train)."""
    run_json = tmp / "run" / "run.json"
    if run_json.is_file():
        return int(json.loads(run_json.read_text()).get("skipped_samples", 0))
    found = re.findall(r"skipped (\d+)", result.output)
    return sum(map(int, found))


def assert_line_or_counted_skip(result, tmp: Path, names: list[str]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output[-3000:]
    if result.exit_code == 0:
        assert _skipped(result, tmp) >= 1, result.output[-3000:]
        return
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    bad = [ln for ln in result.output.splitlines() if ln.startswith("BAD ")]  # gcl-synth verify: one per problem
    assert len(errors) + bool(bad) == 1, result.output[-3000:]
    for line in errors + bad:
        assert any(name in line for name in names), line


@pytest.mark.parametrize("command", list(SHARD_COMMANDS))
@pytest.mark.parametrize("case", [*hostile.MEMBER_CASES, "size-field"])
def test_crafted_member(tmp_path, case, command):
    manifest = hostile.shard_set(tmp_path / "set", case)
    result = SHARD_COMMANDS[command](manifest, tmp_path)
    assert_line_or_counted_skip(result, tmp_path, [manifest.name, "hostile-000000.tar"])


@pytest.mark.parametrize("command", list(SHARD_COMMANDS))
@pytest.mark.parametrize("case", list(hostile.MANIFEST_CASES))
def test_crafted_manifest_field(tmp_path, case, command):
    manifest = hostile.crafted_manifest(tmp_path / "set", case)
    result = SHARD_COMMANDS[command](manifest, tmp_path)
    assert result.exit_code != 0, result.output[-2000:]  # a manifest that lies is never half-trusted
    assert_line_or_counted_skip(result, tmp_path, [manifest.name])


@pytest.mark.parametrize("command", list(NPZ_COMMANDS))
@pytest.mark.parametrize("case", hostile.NPZ_CASES)
def test_crafted_npz(tmp_path, case, command):
    data = hostile.npz(tmp_path / "data.npz", case)
    result = NPZ_COMMANDS[command](data, tmp_path)
    assert result.exit_code != 0, result.output[-2000:]  # images or labels gcl cannot read as they are
    assert_line_or_counted_skip(result, tmp_path, [data.name])


def test_a_clean_set_passes_every_command(tmp_path):
    """The same helpers on an uncrafted set succeed: the failures above come from the crafted bytes."""
    manifest = hostile.shard_set(tmp_path / "set")
    for name, command in SHARD_COMMANDS.items():
        out = tmp_path / name
        out.mkdir()
        result = command(manifest, out)
        assert result.exit_code == 0 and _skipped(result, out) == 0, (name, result.output[-2000:])
    data = hostile.npz(tmp_path / "data.npz")
    for name, command in NPZ_COMMANDS.items():
        out = tmp_path / f"npz-{name}"
        out.mkdir()
        result = command(data, out)
        assert result.exit_code == 0, (name, result.output[-2000:])


# -- every key of every shared file's schema, with wrong types, NaN/inf, negatives, huge values and
# deep nesting (tests/schemafuzz.py): one UserError line naming the key, or accepted; never a traceback

REPO = Path(__file__).resolve().parent.parent
SHA = "0" * 64


def _fuzz(model, doc, read, models=None) -> None:
    import schemafuzz

    failures, counts, paths = schemafuzz.fuzz(model, doc, read, models)
    head = f"{len(failures)} failures over {paths} keys x {len(schemafuzz.HOSTILE)} values:\n"
    assert not failures, head + "\n".join(failures[:15])
    assert counts["refused"] >= paths  # each key refused something (fuzz checks it per key)


def _write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))  # NaN and Infinity as JSON's non-standard words: the readers refuse them
    return path


def test_fuzz_recipe_keys(tmp_path):
    import yaml

    from gcl.train.config import load_config
    from gcl.train.schema import TrainConfig

    # small (each case writes and reads it), yet holding every nested block: their keys come from the schema
    doc = {"shards": ["x.manifest.json"], "augmentations": [{"crop_size": 32}], "gen_augmentations": {"crop_size": 32},
           "optimizer": {"name": "lars"}, "scheduler": {"name": "warmup_cosine"}, "method_kwargs": {"temperature": 0.2}}
    recipe = tmp_path / "r.yaml"

    def read(path, value):
        text = yaml.dump(schemafuzz_with(doc, path, value), Dumper=yaml.CSafeDumper, default_flow_style=True)
        recipe.write_text(text)
        load_config(str(recipe), {})

    read(("epochs",), 10)  # the document itself is valid
    _fuzz(TrainConfig, doc, read)


def test_fuzz_run_json_keys(tmp_path):
    from gcl.train.resume import RunFile, resume_config
    from gcl.train.schema import TrainConfig

    config = TrainConfig(shards=["m.manifest.json"]).to_dict()
    config.update(gen_augmentations={"crop_size": 32})
    doc = {"config": config, "status": "finished", "method": "simclr", "shards": ["m.manifest.json"], "gen_prob": 0.5,
           "epochs": 100, "epochs_done": 100, "batch_size": 256, "world_size": 1, "steps_per_epoch": 4,
           "global_step": 400, "num_views_in_shards": 2, "train_samples": 1024, "skipped_samples": 0,
           "sittings": [{"version": "0.1.0", "commit": SHA[:40], "dirty": False, "num_workers": 2}],
           "eval_sizes": {"bank": 100}, "error": "", "final_metrics": {"train_loss": 1.5},
           "data": {"shards": SHA, "input": None}}
    (tmp_path / "m.manifest.json").write_text("{}")  # where run.json says the data are (the run folder's own)

    def read(path, value):
        _write_json(tmp_path / "run.json", schemafuzz_with(doc, path, value))
        resume_config(str(tmp_path), None, {})

    read(("epochs",), 100)
    _fuzz(RunFile, doc, read, {("config",): TrainConfig})


def test_fuzz_manifest_keys(tmp_path):
    from gcl.manifest import Manifest, load_manifest

    doc = json.loads((REPO / "manifests" / "cifar10-taef2-demo.json").read_text())
    doc.update(has_orig=True, merged_from=[{"name": "a"}], view_stats={"views": 2})
    doc["shards"][0]["keys_sha256"] = SHA

    def read(path, value):
        load_manifest(_write_json(tmp_path / "m.manifest.json", schemafuzz_with(doc, path, value)))

    read(("views",), 2)
    _fuzz(Manifest, doc, read)


def test_fuzz_stats_keys(tmp_path):
    from gcl.manifest import ShardStats, read_stats

    doc = {"shard": "s-000000.tar", "index": 0, "samples": 10, "inputs": 10, "bytes": 4096, "sha256": SHA,
           "errors": {"unreadable": 0}, "skipped": [{"source": "a.png", "error": "unreadable"}], "seconds": 1.5,
           "keys_sha256": SHA, "pixel_sketch": {"orig": [1.0, 2.0]}}

    def read(path, value):
        read_stats(_write_json(tmp_path / "s-000000.stats.json", schemafuzz_with(doc, path, value)))

    read(("samples",), 10)
    _fuzz(ShardStats, doc, read)


def test_fuzz_plan_keys(tmp_path):
    from gcl.synth.plan import PlanFile, read_plan

    options = {"generator": "taesd:taef2", "weights_sha256": SHA, "recipe": "noise(strength=0.5)", "views": 2,
               "resolution": 32, "image_format": "jpg", "quality": 95, "seed": 0, "batch_size": 32,
               "dtype": "float32", "device_type": "cpu", "residual": False}
    doc = {"name": "set", "fingerprint": SHA, "options": options, "input_fingerprint": SHA, "num_inputs": 10,
           "num_shards": 1, "shard_sizes": [10]}

    def read(path, value):
        read_plan(_write_json(tmp_path / "plan.json", schemafuzz_with(doc, path, value)))

    read(("num_inputs",), 10)
    _fuzz(PlanFile, doc, read)


def test_fuzz_study_result_keys(tmp_path):
    from gcl.errors import UserError
    from gcl.eval.study.result_schema import ResultRecord, read_result

    doc = json.loads(next(REPO.glob("studies/*/runs/*.json")).read_text())
    doc.setdefault("synth", {"seconds": 1.0, "flops_per_image": 10, "images": 10, "source": "cost"})
    doc["scores"] = {"last": {"test": {"knn_top1": 50.0}, "val": {"knn_top1": 50.0}, "fit": {"knn_top1": 60.0}}}

    def read(path, value):  # the report leaves a file out with a note: for the fuzz, a refusal
        record, notes = read_result(_write_json(tmp_path / "a-s0.json", schemafuzz_with(doc, path, value)),
                                    doc["arm"], doc["seed"])
        if record is None or notes:
            raise UserError(notes[0])

    read(("seed",), doc["seed"])
    _fuzz(ResultRecord, doc, read)


def schemafuzz_with(doc, path, value):
    import schemafuzz

    return schemafuzz.with_value(doc, path, value)
