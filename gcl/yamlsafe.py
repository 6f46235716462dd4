"""The one YAML loader for files people share (recipes, study files).

PyYAML's safe_load builds no objects, but it still expands aliases: nine levels of
`&a [*b, *b, ...]` in about a kilobyte become 9^9 items the moment anything walks the value (a
digest, a deep copy, a schema). A shared file has no use for aliases, so this loader refuses the
first anchor or alias before any value is built, along with a key given twice (a reader would
see one value and gcl use the other), nesting past Python's stack, and files past a size cap.
Every refusal is a yaml.YAMLError, so callers keep their own one-line "is not valid YAML"
messages.
"""

from __future__ import annotations

import yaml

# Recipes and study files are a few kilobytes; a megabyte is already a hundred studies.
MAX_YAML_CHARS = 1 << 20


class SharedYamlError(yaml.YAMLError):
    """A YAML feature or size a shared file may not use; str() is one line."""


class _SharedLoader(yaml.SafeLoader):
    """SafeLoader (pure Python: its composer can be told to stop at the first alias)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            line = event.start_mark.line + 1
            raise SharedYamlError(f"line {line}: anchors (&name) and aliases (*name) are not allowed in a shared "
                                  "file; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise SharedYamlError(f"line {key_node.start_mark.line + 1}: key {str(key)[:40]!r} is given twice")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str | bytes):
    """yaml.safe_load for a shared file: the same values, or a one-line yaml.YAMLError for aliases,
    anchors, duplicate keys, nesting too deep to walk, numbers Python will not convert, or a text
    over MAX_YAML_CHARS."""
    if len(text) > MAX_YAML_CHARS:
        raise SharedYamlError(f"{len(text)} characters, over the {MAX_YAML_CHARS >> 20} MiB cap of a shared file")
    try:
        return yaml.load(text, Loader=_SharedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise SharedYamlError("nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise SharedYamlError(f"a value cannot be read: {str(exc).splitlines()[0][:80]}") from None


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line for any YAML error (PyYAML's own messages span several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    return (lines[0] if lines else type(exc).__name__) + where
