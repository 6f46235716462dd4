"""Product files (README, docs, recipes, study files, pyproject, constraints) describe gcl on the
user's hardware: never how it was developed (issue numbers), the machines it was developed on
("this machine", a borrowed GPU's result folder `$OUT` and carried wheels), or the repository's
history ("Main job", "the user's top-level folders"). The phrases are specific so that ordinary
uses (a study "sitting", lightly's "helpers", data that "carry" labels) stay allowed."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT_FILES = [REPO / "README.md", REPO / "pyproject.toml", REPO / "constraints.txt",
                 *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "train" / "recipes").rglob("*.yaml")),
                 *sorted((REPO / "studies").glob("*/study.yaml"))]
PROCESS_WORDS = {
    r"\bissues? #\d+": "an issue number",
    r"\bthis machine\b": "'this machine' (say which hardware a figure came from)",
    r"\bthe GPU machine\b": "a particular borrowed GPU machine",
    r"\$OUT\b": "the borrowed machine's result folder",
    r"\bcarr(y|ied|ies)\b[^.\n]{0,20}(\.whl|wheels)": "carried wheels",
    r"result files back": "the borrowed machine's file limit",
    r"\bborrowed\b": "a borrowed machine",
    r"\bMain job\b": "'Main job' (the README's main command)",
    r"\buser's top-level\b": "the repository's history",
}


def offending_lines(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in PROCESS_WORDS.items():
            if re.search(pattern, line, flags=re.IGNORECASE):
                found.append(f"line {number}: {what}: {line.strip()[:100]}")
    return found


def test_the_word_list_catches_process_words_and_spares_product_words():
    caught = ["sized for the issue #8 study", "on this machine with a load average", "carry .whl and .gpu-data",
              "with `$OUT` set", "## Main job", "The repo keeps the user's top-level folders", "only 8 result files back"]
    spared = ["a bounded sitting", "momentum helpers come from lightly", "What the data carry:",
              "Results go to `bench/out/gpu`", "downloads wheels into `.whl/`", "issue a warning"]
    assert all(offending_lines(t) for t in caught), [t for t in caught if not offending_lines(t)]
    assert not any(offending_lines(t) for t in spared), [t for t in spared if offending_lines(t)]


def test_product_files_name_no_issue_no_borrowed_machine_no_carried_wheels():
    assert len(PRODUCT_FILES) > 15 and all(p.is_file() for p in PRODUCT_FILES)
    problems = [f"{p.relative_to(REPO)} {line}" for p in PRODUCT_FILES for line in offending_lines(p.read_text())]
    assert not problems, "\n".join(problems)


def test_the_package_docstring_points_at_a_heading_that_exists():
    import gcl

    page, heading = re.search(r"see (docs/\w+\.md), \"([^\"]+)\"", gcl.__doc__).groups()
    assert f"# {heading}" in (REPO / page).read_text()
