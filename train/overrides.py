"""`gcl-train --set KEY.SUB=VALUE`: set any recipe value from the command line, nested ones too.

The dotted path walks the recipe mapping (`method_kwargs.temperature`, `optimizer.lr`) and lists
by index (`augmentations.0.min_scale`; the index one past the end adds an entry, whose other
fields keep their defaults). VALUE is read as one YAML value (`0.3`, `true`, `null`, `[0.5, 0.5,
0.5]`, or a string), with PyYAML's safe loader that gcl already reads recipes with. A scalar must
be of the kind it replaces (an integer where the recipe or default has one, ...). The result is
the recipe mapping before validation: the recipe validation then rejects unknown keys (naming
the valid ones at that level) and bad values, exactly as if the recipe file said so.

Why not OmegaConf's dotlist: its values may be `${...}` interpolations, resolved when read
(`${oc.env:...}` reads the environment), and `augmentations.0.min_scale=0.2` becomes a mapping key
"0" beside a one-mapping recipe entry (or instead of a list the recipe leaves out), not a list
entry; a path walk over a plain dict is about forty lines.

Keys the runner owns are refused: `output` (the run lock and --resume go by --output) and
`shards_base` (the one place a pipe: command is taken from). A --set value that names data is
checked like a recipe's: a folder or http(s) URL, never a command.
"""

from __future__ import annotations

import copy

import yaml

from gcl.errors import UserError

# runner-owned keys -> the option that sets them
RUNNER_KEYS = {"output": "--output", "shards_base": "--shards-base"}


class OverrideError(UserError):
    """A --set that cannot be applied (one-line message)."""


def parse_set(item: str) -> tuple[list[str], object]:
    """'a.b.0=VALUE' -> (['a', 'b', '0'], VALUE read as YAML)."""
    key, eq, raw = item.partition("=")
    path = key.strip().split(".")
    if not eq or not all(path):
        raise OverrideError(f"--set {item!r}: write KEY=VALUE, e.g. --set method_kwargs.temperature=0.3")
    if path[0] in RUNNER_KEYS:
        raise OverrideError(f"--set {path[0]}: the run's {path[0]} is set with {RUNNER_KEYS[path[0]]}, not --set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise OverrideError(f"--set {key}: {raw!r} is not a YAML value ({str(exc).splitlines()[0]})") from None
    return path, value


def apply_sets(data: dict, items: list[str] | tuple[str, ...], defaults: dict) -> dict:
    """A copy of the recipe mapping `data` with every KEY=VALUE of `items` set, in order.

    defaults: the built-in values (plain types); a nested path into a key the recipe leaves out
    starts from its default (the default augmentation list has one entry, so index 0 exists)."""
    data = copy.deepcopy(data)
    for item in items:
        path, value = parse_set(item)
        if len(path) > 1 and path[0] not in data and path[0] in defaults:
            data[path[0]] = copy.deepcopy(defaults[path[0]])
        _check_kind(_get(data, path) if path[0] in data else _get(defaults, path), value, item)
        _put(data, path, value, item)
    return data


def _get(node, path: list[str]):
    """The value at path, or None where the path leads nowhere (yet)."""
    for key in path:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node


KINDS = ((bool, (bool,), "true or false"), (int, (int,), "an integer"), (float, (int, float), "a number"),
         (str, (str,), "a string"))


def _check_kind(old, new, item: str) -> None:
    """A scalar of the kind it replaces (an int where an int was, ...); None on either side, and
    lists and mappings (their entries are checked by the recipe validation), pass."""
    if old is None or new is None:
        return
    for kind, accepted, words in KINDS:
        if isinstance(old, kind):
            fits = isinstance(new, accepted) and not (isinstance(new, bool) and kind is not bool)
            if not fits:
                key = item.partition("=")[0]
                raise OverrideError(f"--set {key}: takes {words}, not {new!r}")
            return


def _put(node, path: list[str], value, item: str) -> None:
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        here = ".".join(path[:depth]) or "the recipe"
        if isinstance(node, list):
            if not key.isdigit() or int(key) > len(node):
                raise OverrideError(f"--set {item}: {here} is a list of {len(node)}; use an index from 0 to {len(node)} "
                                    f"({len(node)} adds an entry)")
            index = int(key)
            if index == len(node):
                node.append({})
            if last:
                node[index] = value
            else:
                node[index] = _container(node[index], path[depth + 1], item)
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node[key] = _container(node.get(key), path[depth + 1], item)
                node = node[key]
        else:
            raise OverrideError(f"--set {item}: {here} is a value ({node!r}), not a mapping or list")


def _container(current, next_key: str, item: str):
    """The mapping or list the path goes on through: the recipe's own, else a new one."""
    if current is None:
        return [] if next_key.isdigit() else {}
    if isinstance(current, dict) and next_key.isdigit():
        return [current]  # one mapping where a list may stand (augmentations: {...}) is a list of one
    if isinstance(current, (dict, list)):
        return current
    raise OverrideError(f"--set {item}: {current!r} is a value, not a mapping or list")
