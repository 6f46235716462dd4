"""Every command the README and docs/ show is run by a test or marked as needing what the tests
do not have (a GPU, the network); benchmarks are marked as such. The options shown must exist,
the tests named for a command must exist and use its options, and the Python snippets run."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A trailing comment that says why no test runs the command.
MARKER = re.compile(r"#.*\b(needs a GPU|needs GPUs|needs network|benchmark)\b")
TOOLS = ("gcl-synth", "gcl-train", "gcl-eval")

# Shown command (as in the page, continuation lines joined, the trailing comment dropped) -> the
# tests that run it (the same subcommand and options on test-sized data).
EXERCISED = {
    # README
    'python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/gcl-synth run --limit 1000 --output '
    'out/cifar10-taef2 --reference manifests/cifar10-taef2-demo.json': (
        "tests/test_shard_sharing.py::test_readme_main_command_reproduces_the_published_demo_and_leaves_the_tree_clean",
        "tests/test_shard_sharing.py::test_demo_verdict_accepts_a_portable_match_and_refuses_other_images"),
    '.venv/bin/gcl-eval study studies/quickstart/study.yaml': (
        "tests/test_eval_study_quickstart.py::test_quickstart_runs_the_loop_at_a_smaller_size_and_leaves_the_tree_clean",),
    '.venv/bin/gcl-train --shards out/cifar10-taef2/cifar10_train_taesd_k2_r64.manifest.json --recipe cifar10/simclr_study --backbone resnet20 '
    '--epochs 5 --gen-prob 0.5 --output runs/demo-p05 --eval-train ../shared/data/cifar10_train.npz --eval-test '
    '../shared/data/cifar10_test.npz --eval-limit 2000': (
        "tests/test_shard_sharing.py::test_readme_next_steps_train_and_score_the_demo_on_a_cpu",),
    '.venv/bin/gcl-eval knn --ckpt runs/demo-p05 --eval-train ../shared/data/cifar10_train.npz --eval-test '
    '../shared/data/cifar10_test.npz --eval-limit 2000': (
        "tests/test_shard_sharing.py::test_readme_next_steps_train_and_score_the_demo_on_a_cpu",),
    # docs/generators.md
    'gcl-synth run --generator taesd --model ../shared/models/taef2 --input ../shared/data/cifar10_train.npz '
    '--output out/c10 --views 2 --resolution 64 --shard-size 1000 --batch-size 32': (
        "tests/test_synth_run.py::test_same_seed_gives_identical_shard_bytes",
        "tests/test_synth_run.py::test_imagefolder_end_to_end_read_back_with_webdataset"),
    'gcl-synth run --input ~/data/imagenet/train --output out/in1k --resolution 256 --processes 4': (
        "tests/test_synth_run.py::test_imagefolder_end_to_end_read_back_with_webdataset",
        "tests/test_synth_run.py::test_dask_two_workers_cover_every_input"),
    'gcl-synth run --generator vqgan --model ./my-vqgan --input imgs/ --recipe tokens --output out/vq': (
        "tests/test_synth_run.py::test_vqgan_token_recipe_end_to_end",),
    'gcl-synth run --generator vqgan': (
        "tests/test_synth_generators_run.py::test_cli_vqgan_as_typed_is_one_line",),
    'gcl-synth run --generator vqgan --model ./amused-256 --recipe "noise(strength=0)" --image-format png '
    '--output out/amused-recon': (
        "tests/test_synth_published_layouts.py::test_vqgan_in_amused_layout_reconstructs_in_unit_range",),
    'gcl-synth run --generator diffusion --model ./ddpm-cifar10-32 --resolution 32 --recipe '
    '"sdedit(strength=0.3, steps=10)" --output out/ddpm': (
        "tests/test_synth_published_layouts.py::test_diffusion_in_ddpm_root_layout_runs",),
    'gcl-synth run --generator vqgan --model ./taming-vqgan --pixel-range -1-1 --output out/taming': (
        "tests/test_synth_published_layouts.py::test_pixel_range_option_is_recorded",),
    'gcl-synth run --config taef2-res.yaml --output out/c10-res --views 4': (
        "tests/test_synth_config.py::test_a_config_file_run_writes_the_shards_its_flags_write",
        "tests/test_synth_config.py::test_options_typed_on_the_command_line_win_over_the_file"),
    'gcl-synth verify out/c10/cifar10_train_taesd_k2_r64.manifest.json': (
        "tests/test_synth_run.py::test_verify_names_flipped_byte_and_missing_shard",),
    "gcl-synth run --input 's3://my-bucket/laion/part-{000000..000009}.tar' --output out/laion --resolution 256 "
    "--label-key label": (
        "tests/test_synth_webdataset_inputs.py::test_s3_webdataset_input_to_a_local_output",
        "tests/test_synth_webdataset_inputs.py::test_img2dataset_tar_layout_end_to_end_with_a_bad_member"),
    'gcl-synth run --input cifar10_train.npz --output out/c10 --node-rank 0 --num-nodes 2': (
        "tests/test_synth_nodes.py::test_two_nodes_fill_one_output_and_finalize",),
    'gcl-synth run --input cifar10_train.npz --output out/c10 --node-rank 1 --num-nodes 2': (
        "tests/test_synth_nodes.py::test_two_nodes_fill_one_output_and_finalize",),
    'gcl-synth finalize out/c10': (
        "tests/test_synth_nodes.py::test_two_nodes_fill_one_output_and_finalize",),
    'gcl-synth status out/c10': (
        "tests/test_synth_run.py::test_kill_and_resume_gives_the_uninterrupted_shard_set",),
    'gcl-synth run --generator esrgan --input ../shared/data/cifar10_train.npz --limit 500 --views 2 '
    '--resolution 64 --output out/esr': (
        "tests/test_synth_generators_run.py::test_residual_run_records_residual_and_cost",),
    # docs/shards.md
    'gcl-synth merge out/c10/cifar10_train_taesd_k2_r64.manifest.json out/esr --output out/c10-mixed --name taef2_esrgan': (
        "tests/test_shard_merge.py::test_merged_families_hold_both_sets_views_in_order",),
    # docs/training.md
    'gcl-train --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json --recipe cifar10/simclr --method simclr '
    '--backbone resnet18 --epochs 100 --batch-size 256 --gen-prob 0.5 --output runs/simclr-p05 --eval-train '
    '../shared/data/cifar10_train.npz --eval-test ../shared/data/cifar10_test.npz': (
        "tests/test_train_real.py::test_taef2_shards_one_epoch_logs_loss_and_knn",),
    'gcl-train --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json --recipe cifar10/simclr --gen-prob 0 '
    '--output runs/simclr-p0': (
        "tests/test_train_run.py::test_short_run_logs_and_checkpoints",),
    'gcl-train --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json --method supcon --members orig,orig,gen '
    '--output runs/extra': (
        "tests/test_train_members.py::test_supcon_run_with_extra_generated_positive",),
    'gcl-train --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json --method supcon --members orig,orig,orig '
    '--output runs/ctrl': (
        "tests/test_train_members.py::test_supcon_run_with_extra_generated_positive",
        "tests/test_train_members.py::test_members_choose_exact_types_and_distinct_generated_views"),
    'gcl-train --output runs/simclr-p0 --resume': (
        "tests/test_train_resume.py::test_resume_needs_no_other_option_and_refuses_changes",),
    'gcl-train --output /archive/simclr-p0 --resume --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json': (
        "tests/test_train_resume.py::test_a_moved_run_folder_is_pointed_at_its_unmoved_data_and_other_bytes_are_refused",),
    # docs/evaluation.md
    'gcl-eval knn --ckpt runs/NAME --eval-train ../shared/data/cifar10_train.npz --eval-test '
    '../shared/data/cifar10_test.npz': (
        "tests/test_eval_real.py::test_knn_linear_on_checkpoint_run_folder_with_cache",
        "tests/test_eval_probes.py::test_knn_states_chance_and_beats_or_not_its_baselines"),
    'gcl-eval linear --ckpt runs/NAME --eval-train ../shared/data/cifar10_train.npz --eval-test '
    '../shared/data/cifar10_test.npz': (
        "tests/test_eval_real.py::test_knn_linear_on_checkpoint_run_folder_with_cache",),
    'gcl-eval baselines --eval-train ../shared/data/cifar10_train.npz --eval-test ../shared/data/cifar10_test.npz '
    '--output runs/floors': (
        "tests/test_eval_probes.py::test_cli_baselines_are_the_random_init_and_raw_pixel_floors",),
    'gcl-eval compare runs/A runs/B --output runs': (
        "tests/test_eval_probes.py::test_compare_table_and_plot",),
    'gcl-eval inspect out/c10 --rows 8': (
        "tests/test_eval_sheet.py::test_inspect_and_viewstats_commands",),
    'gcl-eval preview --input ../shared/data/cifar10_test.npz --recipe "noise(strength=0.2..0.9)" --views 4 '
    '--output runs': (
        "tests/test_eval_real.py::test_preview_writes_sheet_without_shards",),
    'gcl-eval viewstats out/c10/cifar10_train_taesd_k2_r64.manifest.json --samples 200': (
        "tests/test_eval_sheet.py::test_inspect_and_viewstats_commands",),
    # docs/python-api.md
    'gcl-eval export runs/simclr --output exported/resnet18': (
        "tests/test_export.py::test_export_rebuilds_with_the_library_and_gives_gcls_features",),
    'gcl-train --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json --recipe cifar10/simclr --backbone timm:resnet10t '
    '--backbone-weights resnet10t.safetensors --output runs/r10t': (
        "tests/test_timm_backbones.py::test_timm_run_trains_from_weights_then_scores_and_exports",),
    'gcl-train --shards out/c10/cifar10_train_taesd_k2_r64.manifest.json --recipe cifar10/simclr --set '
    'method_kwargs.temperature=0.3 --set augmentations.0.min_scale=0.2 --output runs/t03': (
        "tests/test_train_overrides.py::test_set_lands_in_run_json_and_bad_ones_stop_before_work",),
    # docs/studies.md
    'gcl-eval study studies/cifar10-gen-views/study.yaml': (
        "tests/test_eval_study_e2e.py::test_tiny_study_runs_skips_resumes_records_failures_and_refuses_stale",),
    'gcl-eval study studies/cifar10-gen-views/study.yaml --dry-run': (
        "tests/test_eval_study.py::test_arm_recipe_typo_is_caught_by_gcl_train_before_any_work",),
    'gcl-eval study studies/cifar10-gen-views/study.yaml --max-runs 2 --only hand3,family --seeds 0,1': (
        "tests/test_eval_study_e2e.py::test_tiny_study_runs_skips_resumes_records_failures_and_refuses_stale",),
    'gcl-eval study studies/cifar10-confirm/study.yaml': (
        "tests/test_eval_study_e2e.py::test_tiny_study_runs_skips_resumes_records_failures_and_refuses_stale",
        "tests/test_eval_study.py::test_shipped_studies_state_their_rule_and_hold_validation_out"),
    'gcl-eval study studies/cifar10-scarce/study.yaml': (
        "tests/test_eval_study.py::test_arm_recipe_typo_is_caught_by_gcl_train_before_any_work",
        "tests/test_eval_study.py::test_shipped_studies_state_their_rule_and_hold_validation_out"),
    'gcl-eval study studies/cifar10-gen-views/study.yaml --report-only': (
        "tests/test_eval_study.py::test_report_only_needs_results",),
}


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(r"^```" + language + r"\n(.*?)^```", text, flags=re.S | re.M)


def _split_comment(line: str) -> tuple[str, str]:
    """(command, trailing comment): the first ' #' outside quotes starts the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i:]
    return line.strip(), ""


def shown_commands() -> list[tuple[str, str, str]]:
    """(page, command, comment) for every command line in the pages' bash blocks."""
    found = []
    for page in PAGES:
        for block in _code_blocks(page.read_text(), "bash"):
            for line in re.sub(r"\\\n\s*", "", block).splitlines():
                command, comment = _split_comment(line)
                if command:
                    found.append((page.relative_to(REPO).as_posix(), " ".join(command.split()), comment))
    return found


def inline_commands() -> list[tuple[str, str]]:
    """(page, code span) for inline code that shows a gcl tool with options."""
    found = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        for span in re.findall(r"`([^`]+)`", text.replace("\n", " ")):
            if span.split(" ")[0].split("/")[-1] in TOOLS and " --" in span:
                found.append((page.relative_to(REPO).as_posix(), span))
    return found


def _tool_call(command: str) -> tuple[str, list[str]] | None:
    """(tool, arguments) of the gcl tool a command line runs, past env assignments and `&&` chains."""
    for part in command.split("&&"):
        words = shlex.split(part)
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words = words[1:]
        if words and words[0].split("/")[-1] in TOOLS:
            return words[0].split("/")[-1], words[1:]
    return None


def _click_command(tool: str, args: list[str]) -> click.Command:
    from gcl.eval.cli import main as gcl_eval
    from gcl.synth.cli import main as gcl_synth
    from gcl.train.cli import main as gcl_train

    cmd = {"gcl-synth": gcl_synth, "gcl-train": gcl_train, "gcl-eval": gcl_eval}[tool]
    if isinstance(cmd, click.Group):
        assert args and args[0] in cmd.commands, f"{tool} has no subcommand {args[:1]}"
        cmd = cmd.commands[args[0]]
    return cmd


def _long_options(args: list[str]) -> list[str]:
    return [a.split("=")[0] for a in args if a.startswith("--")]


def _test_source(node_id: str) -> tuple[str, str]:
    """(file text, function source) of tests/FILE.py::NAME; fails if either is missing."""
    path, name = node_id.split("::")
    text = (REPO / path).read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return text, ast.get_source_segment(text, node)
    raise AssertionError(f"{node_id} does not exist")


def _ci_command() -> str:
    """.ci/run's command line as the README shows it (CI adds only pip's -q)."""
    return (REPO / ".ci" / "run").read_text().strip().splitlines()[-1].replace("pip install -q ", "pip install ")


def test_every_shown_command_is_run_by_a_test_or_marked():
    for page in PAGES:  # an unclosed fence would hide the rest of a page from these checks
        assert len(re.findall(r"^```", page.read_text(), flags=re.M)) % 2 == 0, page
    commands = shown_commands()
    assert len(commands) > 20 and {page for page, _, _ in commands} >= {"README.md", "docs/generators.md"}
    unaccounted = [f"{page}: {cmd}" for page, cmd, comment in commands
                   if cmd not in EXERCISED and cmd != _ci_command() and not MARKER.search(comment)]
    assert not unaccounted, "commands shown but neither run by a test (EXERCISED) nor marked:\n" + "\n".join(unaccounted)
    benchmarks = [cmd for _, cmd, comment in commands if "benchmark" in comment]
    assert all(cmd.startswith("python bench/") for cmd in benchmarks), benchmarks


def test_each_listed_test_exists_and_uses_the_options_shown():
    shown = {cmd for _, cmd, _ in shown_commands()}
    stale = sorted(set(EXERCISED) - shown)
    assert not stale, f"listed but no longer shown: {stale}"
    for command, node_ids in EXERCISED.items():
        sources = [_test_source(node_id) for node_id in node_ids]
        if any("_readme_commands(" in func for _, func in sources):
            continue  # the test reads this very command from the README
        call = _tool_call(command)
        assert call, command
        texts = "\n".join(text for text, _ in sources)
        unused = [opt for opt in _long_options(call[1]) if f'"{opt}"' not in texts]
        assert not unused, f"{command}: no listed test passes {unused}"


def test_shown_options_exist():
    """Every gcl tool call shown, in a block or inline, names a real subcommand and real options."""
    calls = [(page, cmd) for page, cmd, _ in shown_commands()] + inline_commands()
    checked = 0
    for page, command in calls:
        call = _tool_call(command.replace("...", ""))
        if call is None:
            continue
        tool, args = call
        cmd = _click_command(tool, args)
        known = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
        unknown = [opt for opt in _long_options(args) if opt not in known]
        assert not unknown, f"{page}: `{command}`: {tool} {cmd.name} has no {unknown}"
        checked += 1
    assert checked > 30


def test_benchmark_options_exist():
    for page, command, _ in shown_commands():
        if command.startswith("python bench/"):
            script = shlex.split(command)[1]
            source = (REPO / script).read_text()
            for opt in _long_options(shlex.split(command)[2:]):
                assert f'"{opt}"' in source, f"{page}: {script} has no option {opt}"


def test_set_up_commands_are_the_ones_ci_and_the_demo_test_run():
    """The README's two set-up commands: the test command is .ci/run's (which adds only pip's -q),
    and the main command is read from the README by the demo test."""
    readme_blocks = [b.strip() for b in _code_blocks((REPO / "README.md").read_text(), "bash")]
    assert readme_blocks[1] == _ci_command()
    assert readme_blocks[0].startswith("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/gcl-synth run ")


@pytest.mark.parametrize("page", ["docs/shards.md", "docs/layout.md"])
def test_python_snippets_run(page, tmp_path, monkeypatch):
    """The page's Python blocks run as shown, on a set of 20 one-family shards at the path they name."""
    import numpy as np

    from gcl.shards import Sample, ShardWriter, encode_image, shard_name

    folder = tmp_path / "out" / "c10"
    folder.mkdir(parents=True)
    for index in range(20):
        writer = ShardWriter(folder / shard_name("cifar10_train_taesd_k2_r64", index))
        image = encode_image(np.full((8, 8, 3), index, np.uint8), "jpg", 90)
        views = [{"view": v, "seed": v, "ops": []} for v in range(2)]
        writer.write(Sample(key=f"k{index}", images={"orig": image, "view0": image, "view1": image},
                            meta={"views": views}, label=index % 10))
        writer.close()
    monkeypatch.chdir(tmp_path)
    snippets = _code_blocks((REPO / page).read_text(), "python")
    assert snippets
    scope: dict = {}
    for snippet in snippets:
        exec(compile(snippet, page, "exec"), scope)  # noqa: S102 - the page's own example code
    if page == "docs/shards.md":
        assert len(scope["views"]) == 2 and scope["label"] == 0 and len(next(iter(scope["ds"]))) > 0


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (REPO / image).is_file(), image


def test_pages_speak_of_the_project_not_of_how_it_was_built():
    words = re.compile(r"\bthis session\b|\bissue #\d|\bissue \d|\blent\b|\bthe lead\b", re.I)
    for page in PAGES:
        found = words.findall(page.read_text())
        assert not found, f"{page.relative_to(REPO)}: {found}"
        for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not link.startswith("http"):
                assert (page.parent / link).exists(), f"{page.relative_to(REPO)}: broken link {link}"
