"""Fuzz cases generated from the shared files' schemas: every key (nested ones included) of a
valid document, set to each hostile value in turn. A new key in a schema is fuzzed without a
change here; a new nested model needs one element in the test's valid document (checked)."""

from __future__ import annotations

import copy
import signal
import time
import typing

from pydantic import BaseModel

from gcl.errors import UserError
from gcl.schema import _model_in


def _deep(kind: str, depth: int = 64):  # past any schema's depth (3), within what YAML writes quickly
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


HOSTILE = {
    "text": "x", "bool": True, "list": [1], "mapping": {"k": 1}, "nan": float("nan"), "inf": float("inf"),
    "-inf": float("-inf"), "negative": -1, "negative-float": -1e300, "huge-int": 10**30, "huge-float": 1e308,
    "huge-text": "x" * 10_000, "deep-list": _deep("list"), "deep-mapping": _deep("mapping"),
}
CASE_SECONDS = 10


def _container(annotation) -> str:
    """'list', 'dict' or 'model': how the nested model sits in a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "dict"
    for arg in typing.get_args(annotation):
        kind = _container(arg)
        if kind != "model":
            return kind
    return "model"


def key_paths(model: type[BaseModel], doc, models: dict | None = None, prefix: tuple = (), seen: set | None = None):
    """Every key path of `model` inside `doc` (a valid document); `models` maps a path to the model
    of a field typed as a plain mapping (run.json's config: the recipe schema). `seen` collects the
    models walked into."""
    models = models or {}
    seen = seen if seen is not None else set()
    seen.add(model)
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = prefix + (key,)
        yield path
        sub = models.get(path) or _model_in(field.annotation)
        value = doc.get(key) if isinstance(doc, dict) else None
        if sub is None or value is None:
            continue
        kind = "model" if path in models else _container(field.annotation)
        if kind == "list" and isinstance(value, list) and value:
            yield from key_paths(sub, value[0], models, path + (0,), seen)
        elif kind == "dict" and isinstance(value, dict) and value:
            first = next(iter(value))
            yield from key_paths(sub, value[first], models, path + (first,), seen)
        elif kind == "model" and isinstance(value, dict):
            yield from key_paths(sub, value, models, path, seen)


def reachable(model: type[BaseModel], models: dict | None = None) -> set:
    found, todo = set(), [model, *(models or {}).values()]
    while todo:
        m = todo.pop()
        if m in found:
            continue
        found.add(m)
        todo += [s for f in m.model_fields.values() if (s := _model_in(f.annotation)) is not None]
    return found


def with_value(doc, path: tuple, value):
    out = copy.deepcopy(doc)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def _alarm(signum, frame):
    raise TimeoutError(f"a parse ran past {CASE_SECONDS} s")


def run_case(read, path: tuple, value) -> tuple[str, str]:
    """('accepted' | 'refused' | 'BAD', message): `read(path, value)` must return or raise one
    UserError line naming the key, within CASE_SECONDS."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    t0 = time.perf_counter()
    try:
        outcome = _outcome(read, path, value)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return ("BAD", "slow") if time.perf_counter() - t0 > CASE_SECONDS else outcome


def _outcome(read, path: tuple, value) -> tuple[str, str]:
    try:
        read(path, value)
        return "accepted", ""
    except UserError as exc:
        msg = str(exc)
        leaf = next(str(p) for p in reversed(path) if isinstance(p, str))
        if "\n" in msg:
            return "BAD", f"more than one line: {msg[:300]!r}"
        if leaf not in msg and leaf.replace("_", "-") not in msg:
            return "BAD", f"does not name {leaf!r}: {msg[:300]}"
        return "refused", msg
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a failure
        return "BAD", f"{type(exc).__name__}: {str(exc)[:300]}"


def fuzz(model, doc, read, models: dict | None = None) -> tuple[list[str], dict[str, int], int]:
    """(failures, counts by outcome, paths): every key path x every hostile value."""
    seen: set = set()
    paths = list(key_paths(model, doc, models, seen=seen))
    missing = reachable(model, models) - seen
    failures = [f"the valid document holds no {m.__name__}: its keys would go unfuzzed" for m in missing]
    counts = {"accepted": 0, "refused": 0, "BAD": 0}
    for path in paths:
        refused = 0
        for name, value in HOSTILE.items():
            outcome, msg = run_case(read, path, value)
            counts[outcome] += 1
            refused += outcome == "refused"
            if outcome == "BAD":
                failures.append(f"{'.'.join(map(str, path))} = {name}: {msg}")
        if not refused:
            failures.append(f"{'.'.join(map(str, path))}: every hostile value was accepted")
    return failures, counts, len(paths)
