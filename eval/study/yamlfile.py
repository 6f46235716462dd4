"""YAML for study files and the recipes they name, read with bounds fixed before any value is built.

Anchors and aliases stay allowed (a study reuses an augmentation block with `&weak` / `*weak`),
but an alias shares a node rather than copying it, so a few hundred bytes of nested aliases can
stand for billions of values once anything walks them (an "alias bomb"). The document is composed
into its node graph first (linear in the file's size), the graph's expanded size and depth are
counted with one memoized walk, and only a document under the caps is turned into Python values.
Nesting is bounded first, on the parser's events, so no step recurses deeper than MAX_DEPTH.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MAX_BYTES = 128 << 10  # a study file or recipe is a few KB
MAX_NODES = 200_000  # values after alias expansion: far above any real study, far below a bomb
MAX_DEPTH = 64  # nesting levels
# libyaml's parser when PyYAML has it: the pure-Python scanner spends seconds on 128 KB of nested
# brackets; the values are built by the same Python constructor either way
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLimitError(ValueError):
    """The document exceeds a cap (said in one line by the caller, with the file's name)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_expansion(root: yaml.Node) -> None:
    """Expanded node count and depth of a composed document, without expanding it (iterative, so
    a deep document cannot exhaust the stack; a node that contains itself is refused)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if size[key] > MAX_NODES:
                raise YamlLimitError(f"expands to more than {MAX_NODES} values (nested aliases?)")
            if depth[key] > MAX_DEPTH:
                raise YamlLimitError(f"nests deeper than {MAX_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlLimitError("has an alias that contains itself")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _check_depth(text: str) -> None:
    """Nesting depth from the parser's event stream (iterative), before the composer, which recurses
    once per level, sees the document: 5,000 `[` fail at level 65, not deep in the stack."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlLimitError(f"nests deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_bounded(text: str):
    """yaml.safe_load with the caps above (YamlLimitError, yaml.YAMLError, RecursionError on failure)."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"is larger than {MAX_BYTES} bytes")
    _check_depth(text)
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        check_expansion(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def read_yaml_file(path: Path, what: str, error: type[Exception]):
    """A YAML file's value; every failure is one `error` line naming `what` and the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}") from None
    try:
        return load_bounded(text)
    except YamlLimitError as exc:
        raise error(f"{what} {path} {exc}") from None
    except yaml.MarkedYAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
        raise error(f"{what} {path} is not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise error(f"{what} {path} nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as exc:  # an integer of 5,000 digits, a date like 2026-13-45
        raise error(f"{what} {path} holds a value YAML cannot build: {str(exc).splitlines()[0][:120]}") from None
