"""The three CLIs name a concept the same way: -h everywhere, --output for output folders,
--eval-train/--eval-test/--eval-limit for labelled evaluation data, --device/--accelerator
defaulting to auto, and every gcl-train option with help and a shown default."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from gcl.eval.cli import main as gcl_eval
from gcl.synth.cli import main as gcl_synth
from gcl.train.cli import main as gcl_train


def _command(group, name):
    return group if name is None else group.commands[name]


def _options(cmd) -> dict[str, click.Option]:
    return {name: p for p in cmd.params if isinstance(p, click.Option) and not p.hidden for name in p.opts}


@pytest.mark.parametrize("argv", [["gcl-synth"], ["gcl-synth", "run"], ["gcl-synth", "verify"], ["gcl-eval"],
                                  ["gcl-eval", "knn"], ["gcl-eval", "compare"], ["gcl-eval", "preview"],
                                  ["gcl-train"]])
def test_dash_h_everywhere(argv):
    tool = {"gcl-synth": gcl_synth, "gcl-eval": gcl_eval, "gcl-train": gcl_train}[argv[0]]
    r = CliRunner().invoke(tool, argv[1:] + ["-h"])
    assert r.exit_code == 0 and r.output.startswith("Usage:"), r.output


def test_one_name_per_concept():
    commands = {"synth run": gcl_synth.commands["run"], "train": gcl_train,
                **{f"eval {n}": gcl_eval.commands[n] for n in ("knn", "linear", "baselines", "compare", "inspect",
                                                                "preview")}}
    for where, cmd in commands.items():
        opts = _options(cmd)
        assert "--output" in opts, where
        assert not {"--out", "--plot", "--limit-train", "--limit-test", "--train", "--test"} & set(opts), where
    for where in ("train", "eval knn", "eval linear", "eval baselines"):
        assert {"--eval-train", "--eval-test", "--eval-limit"} <= set(_options(commands[where])), where
    for where in ("synth run", "eval knn", "eval linear", "eval baselines", "eval preview"):
        assert _options(commands[where])["--device"].default == "auto", where
    assert _options(gcl_train)["--accelerator"].default == "auto"
    assert "--linear-recipe" in _options(gcl_eval.commands["linear"])


def test_every_train_option_has_help_and_a_default():
    help_text = CliRunner().invoke(gcl_train, ["-h"]).output
    for opt in gcl_train.params:
        if not isinstance(opt, click.Option) or opt.hidden:
            continue
        assert opt.help, opt.opts
        if not opt.is_flag and not opt.multiple and opt.name not in ("recipe", "input_", "shards_base"):
            assert opt.default is not None or isinstance(opt.show_default, str), opt.opts
    help_text = " ".join(help_text.split())
    for shown in ("Contrastive method. [default: simclr]", "(e.g. timm:resnet10t; its pooled features). [default: resnet18]", "[default: 100; x>=1]",
                  "[default: lars]", "[default: runs/default]", "[default: auto]"):
        assert shown in help_text, shown


def test_train_defaults_shown_in_help_never_override_a_recipe(tmp_path, monkeypatch):
    """--epochs shows 100 as its default, yet a recipe's epochs stand unless --epochs is typed."""
    from gcl.train.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nmethod: byol\n")
    seen = {}

    def fake_train(cfg, resume, record_keys, log=None, progress=True):
        seen["cfg"] = cfg
        return {"status": "stopped"}

    monkeypatch.setattr("gcl.train.run.train", fake_train)  # the options as the cli hands them over
    r = CliRunner().invoke(gcl_train, ["--shards", "x.json", "--recipe", str(recipe), "--output", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].epochs == 7 and seen["cfg"].method == "byol" and seen["cfg"].optimizer.name == "lars"
    r = CliRunner().invoke(gcl_train, ["--shards", "x.json", "--recipe", str(recipe), "--epochs", "100"])
    assert r.exit_code == 0 and seen["cfg"].epochs == 100  # typed: wins even when equal to the default
    assert load_config(str(recipe), {"shards": ("x.json",)}).epochs == 7


def test_every_option_of_every_command_has_help():
    def commands(name, cmd):
        yield name, cmd
        for sub, child in getattr(cmd, "commands", {}).items():
            yield from commands(f"{name} {sub}", child)

    for tool, root in (("gcl-synth", gcl_synth), ("gcl-train", gcl_train), ("gcl-eval", gcl_eval)):
        for name, cmd in commands(tool, root):
            for opt in cmd.params:
                if isinstance(opt, click.Option) and not opt.hidden:
                    assert opt.help, f"{name} {opt.opts[0]} has no help"


def test_each_name_means_one_thing_across_the_tools():
    """--processes (synth: processes writing shards) is not --num-workers (train: data-loader workers);
    --device (synth, eval: one process) and --accelerator/--devices (train: Lightning's names) say so in
    -h; the --eval-limit defaults differ and -h says why; preview uses run's recipe default; -v and
    --no-progress exist wherever work shows progress."""
    run, knn = gcl_synth.commands["run"], gcl_eval.commands["knn"]
    assert "--processes" in _options(run) and "--workers" not in _options(run)  # the old name: hidden
    assert "--num-workers" in _options(gcl_train) and "--processes" not in _options(gcl_train)
    assert "--num-workers" in _options(run)["--processes"].help and "--processes" in _options(gcl_train)["--num-workers"].help
    for where, cmd in (("synth run", run), ("eval knn", knn), ("eval preview", gcl_eval.commands["preview"])):
        help_text = _options(cmd)["--device"].help
        assert "cuda:N" in help_text and ("--accelerator" in help_text or "gcl-synth run" in help_text), where
    assert "--device" in _options(gcl_train)["--devices"].help and "Lightning" in _options(gcl_train)["--accelerator"].help
    train_limit, eval_limit = _options(gcl_train)["--eval-limit"], _options(knn)["--eval-limit"]
    assert train_limit.default == 10000 and eval_limit.default == 0
    assert "every epoch" in train_limit.help and "every epoch" in eval_limit.help  # the reason, on both sides
    preview = _options(gcl_eval.commands["preview"])
    assert preview["--recipe"].default is run.params[[p.name for p in run.params].index("recipe")].default is None
    assert "gcl-synth run's 2" in preview["--views"].help
    for where, opts in (("synth", _options(gcl_synth)), ("train", _options(gcl_train)), ("eval", _options(gcl_eval))):
        assert "-v" in opts and "--verbose" in opts, where
    for where, cmd in (("synth run", run), ("train", gcl_train), ("eval knn", knn), ("eval linear", gcl_eval.commands["linear"]),
                       ("eval baselines", gcl_eval.commands["baselines"])):
        assert "--no-progress" in _options(cmd), where


def test_the_old_workers_spelling_still_sets_the_processes(monkeypatch, tmp_path):
    seen = {}

    def fake_execute(cfg):
        seen["workers"] = cfg.workers
        return {"failed": {}, "reference_match": None}

    monkeypatch.setattr("gcl.synth.run.execute", fake_execute)
    monkeypatch.setattr("gcl.synth.defaults.resolve_cifar10", lambda split: tmp_path / "x.npz")
    for argv, workers in ((["--workers", "3"], 3), (["--processes", "2"], 2), ([], 1)):
        r = CliRunner().invoke(gcl_synth, ["run", "--output", str(tmp_path / "o"), *argv])
        assert r.exit_code == 0 and seen["workers"] == workers and not r.output.strip(), r.output
