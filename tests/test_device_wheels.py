"""The wheel list for the GPU machine (bench/device_wheels.txt) closes the gap between what gcl imports
and what that machine has (bench/device_packages.txt), at the versions this project installs."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("gcl", "synth", "train", "eval")
# the GPU machine's interpreter: markers are evaluated for it, not for the one running the tests
GPU_MARKERS = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
               "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}


def machine_packages() -> set[str]:
    lines = (ROOT / "bench/device_packages.txt").read_text().splitlines()
    return {canonicalize_name(ln.strip()) for ln in lines if ln.strip() and not ln.startswith("#")}


def wheel_list() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """({name: version} carried, {name: why} deliberately not carried, lines without a reason)."""
    carried, skipped, unexplained = {}, {}, []
    for line in (ROOT / "bench/device_wheels.txt").read_text().splitlines():
        body, _, why = line.partition("#")
        body = body.strip()
        if not body:
            continue
        if not why.strip():
            unexplained.append(body)
        if body.startswith("-"):
            skipped[canonicalize_name(body[1:])] = why.strip()
        else:
            name, _, version = body.partition("==")
            assert canonicalize_name(name) not in carried, f"{name} listed twice: one version of each"
            carried[canonicalize_name(name)] = version
    return carried, skipped, unexplained


def runtime_requirements(dist: str) -> list[str]:
    reqs = [Requirement(r) for r in md.requires(dist) or []]
    return [canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate({**GPU_MARKERS, "extra": ""})]


def imported_top_modules() -> set[str]:
    """Top-level modules imported anywhere in gcl's code (module level or inside functions)."""
    names = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"gcl", "__future__"}


def test_every_line_says_why_and_pins_the_installed_version():
    carried, skipped, unexplained = wheel_list()
    assert not unexplained, f"lines without a '# why': {unexplained}"
    assert carried, "no wheels listed"
    for name, version in carried.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version), f"{name}: '{version}' is not one exact version"
        assert md.version(name) == version, f"{name}: list says {version}, this project installs {md.version(name)}"
    machine = machine_packages()
    assert not set(carried) & machine, f"already on the GPU machine: {sorted(set(carried) & machine)}"


def test_pyproject_dependencies_are_on_the_machine_or_carried():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    carried, _, _ = wheel_list()
    have = machine_packages() | set(carried)
    for dep in map(Requirement, deps):
        assert canonicalize_name(dep.name) in have, f"{dep.name} is neither on the GPU machine nor in the wheel list"
        if canonicalize_name(dep.name) in carried:
            assert dep.specifier.contains(carried[canonicalize_name(dep.name)]), f"{dep} vs the carried version"
        for extra in dep.extras:  # dask[distributed]: what the extra pulls in must be there too
            for r in map(Requirement, md.requires(dep.name) or []):
                if r.marker is not None and r.marker.evaluate({**GPU_MARKERS, "extra": extra}):
                    assert canonicalize_name(r.name) in have, f"{dep.name}[{extra}] needs {r.name}"


def test_carried_packages_find_their_requirements_there():
    carried, skipped, _ = wheel_list()
    have = machine_packages() | set(carried)
    missing = {(name, req) for name in carried for req in runtime_requirements(name) if req not in have | set(skipped)}
    assert not missing, f"requirements neither on the machine, carried, nor explained: {sorted(missing)}"


def test_every_imported_module_comes_from_the_machine_or_a_wheel():
    carried, _, _ = wheel_list()
    have = machine_packages() | set(carried)
    owners = md.packages_distributions()
    unknown = {}
    for module in sorted(imported_top_modules()):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"gcl imports {module}, which no installed distribution provides"
        if not dists & have:
            unknown[module] = sorted(dists)
    assert not unknown, f"imported by gcl but neither on the GPU machine nor carried: {unknown}"
