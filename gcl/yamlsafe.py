"""The one YAML loader for files people share (recipes, study files, linear-probe recipes).

PyYAML's safe_load builds no objects, but it still expands aliases: nine levels of
`&a [*b, *b, ...]` in about a kilobyte become 9^9 items the moment anything walks the value (a
digest, a deep copy, a schema). This loader composes the document first and measures its size
with every alias expanded, counting each node once (so a bomb is measured in microseconds); a
document past MAX_EXPANDED_NODES, or an alias to itself, is refused before any value is built.
Aliases within the cap are expanded into independent copies (no value is shared between two
places). It also refuses a key given twice (a reader would see one value and gcl use the
other), nesting past Python's stack, and texts past a size cap. Every refusal is a
yaml.YAMLError with a one-line message, so callers keep their own "is not valid YAML" lines.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# Recipes and study files are a few kilobytes; a megabyte is already a hundred studies.
MAX_YAML_CHARS = 1 << 20
# Nodes (scalars, lists, mappings) after expanding aliases: a study of a hundred arms, each with
# its own augmentation blocks, is a few thousand; a 9-level alias bomb is 9^9.
MAX_EXPANDED_NODES = 100_000


class SharedYamlError(yaml.YAMLError):
    """A YAML feature or size a shared file may not use; str() is one line."""


class _SharedLoader(yaml.SafeLoader):
    """SafeLoader (pure Python: its composed node graph can be measured before construction)."""

    aliased = False

    def compose_node(self, parent, index):
        if isinstance(self.peek_event(), yaml.AliasEvent):
            self.aliased = True
        return super().compose_node(parent, index)

    def construct_document(self, node):
        size = expanded_size(node)
        if size > MAX_EXPANDED_NODES:
            raise SharedYamlError(f"aliases expand the document past {MAX_EXPANDED_NODES} values; "
                                  "write the values out")
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    line = key_node.start_mark.line + 1
                    raise SharedYamlError(f"line {line}: key {key_node.value[:40]!r} is given twice")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def expanded_size(root) -> int:
    """Nodes in the document with every alias expanded, each distinct node visited once."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes and not children_done:
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), MAX_EXPANDED_NODES + 1) for c in children),
                                  MAX_EXPANDED_NODES + 1)
            continue
        sizes[id(node)] = -1  # in progress: meeting it again below itself is a recursive alias
        stack.append((node, True))
        for child in children:
            if sizes.get(id(child)) == -1:
                raise SharedYamlError(f"line {child.start_mark.line + 1}: an alias refers to a value that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def safe_load(text: str | bytes):
    """yaml.safe_load for a shared file: the same values, or a one-line yaml.YAMLError for aliases
    that expand past MAX_EXPANDED_NODES or into themselves, duplicate keys, nesting too deep to walk,
    numbers Python will not convert, or a text over MAX_YAML_CHARS."""
    if len(text) > MAX_YAML_CHARS:
        raise SharedYamlError(f"{len(text)} characters, over the {MAX_YAML_CHARS >> 20} MiB cap of a shared file")
    loader = _SharedLoader(text)
    try:
        data = loader.get_single_data()
        return _unshared(data) if loader.aliased else data
    except RecursionError:
        raise SharedYamlError("nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise SharedYamlError(f"a value cannot be read: {str(exc).splitlines()[0][:80]}") from None
    finally:
        loader.dispose()


def _unshared(value):
    """A copy in which each alias is its own value (PyYAML gives every alias the same object, so a
    change to one place would change the other); bounded by MAX_EXPANDED_NODES."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line for any YAML error (PyYAML's own messages span several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    return (lines[0] if lines else type(exc).__name__) + where


def read_shared_file(path, what: str, error: type[Exception], kind: str = "YAML"):
    """safe_load of the file at `path` (None when it is empty); a missing, unreadable or invalid file
    is one `error` line naming `what` (e.g. "study file") and the file."""
    path = Path(path)
    cap = MAX_YAML_CHARS * 4  # UTF-8 bytes of the longest text safe_load takes: a device or a huge file is never read whole
    try:
        with open(path, "rb") as fh:
            raw = fh.read(cap + 1)
        text = raw.decode("utf-8") if len(raw) <= cap else None
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if text is None or len(text) > MAX_YAML_CHARS:  # one message however far past the cap
        raise error(f"{what} {path} is over the {MAX_YAML_CHARS >> 20} MiB cap of a shared file")
    try:
        return safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid {kind}: {yaml_error_line(exc)}") from None
