"""What every typed schema of a shared file has in common (pydantic v2 models), and its one-line errors.

A shared file (recipe, study file, run.json, plan.json, manifest, stats.json, study result) is data
parsed once into a model: known keys only (a typo is an error, never a silent default), strict
types (no "no" -> True, no "0.4" -> 0.4, no 2.5 -> 2), finite numbers and bounded ranges. A refusal
is one line that names the file, the key and what the key allows.
"""

from __future__ import annotations

import reprlib
import typing

from pydantic import BaseModel, ConfigDict, ValidationError

from gcl.errors import UserError

# A text field of a shared file names a path, a URL, a hash or a label: PATH_MAX is 4096.
MAX_TEXT = 4096


class SharedModel(BaseModel):
    """Base of every shared-file schema."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, str_max_length=MAX_TEXT)


class OpenModel(SharedModel):
    """A record whose keys gcl writes but never reads back (timings, provenance): its values are still
    typed where given, other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")


_show = reprlib.Repr()
_show.maxstring, _show.maxother, _show.maxlist, _show.maxdict, _show.maxlevel = 40, 40, 4, 3, 2


def parse(model: type[BaseModel], data, where, error: type[UserError] = UserError):
    """model.model_validate(data), or one `error` line: '{where}: key K: what K allows, got V'.
    where: the file's name, or a function of the first problem's location that returns one (a merge
    of a file and command-line options names whichever the bad key came from)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc = min((e["loc"] for e in exc.errors(include_url=False)), key=lambda loc: len(key_path(loc)))
        raise error(f"{where(loc) if callable(where) else where}: {describe(exc, model)}") from None
    except RecursionError:
        raise error(f"{where(()) if callable(where) else where} is nested too deeply") from None


def describe(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first problem of a ValidationError as 'key K: ..., got V' (and how many more there are)."""
    errors = exc.errors(include_url=False, include_context=False)
    # the outermost problem first: a list of the wrong length before the values inside it
    errors.sort(key=lambda e: len(key_path(e["loc"])))
    first = errors[0]
    loc = first["loc"]
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        unknown = [str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == parent]
        rest = len(errors) - len(unknown)
        more = f" (and {rest} more problem{'s' if rest > 1 else ''})" if rest else ""
        allowed = allowed_keys(model, parent) if model is not None else []
        said = f"; allowed: {', '.join(allowed)}" if allowed else ""
        inside = f" in {key_path(parent)}" if key_path(parent) else ""
        return f"unknown key(s) {', '.join(_show.repr(u)[1:-1] for u in unknown)}{inside}{said}{more}"
    if first["type"] == "missing":
        return f"key '{key_path(loc)}' is missing{more}"
    got = _show.repr(first.get("input"))
    return f"key '{key_path(loc) or '(top level)'}': {_allowed(first)}, got {got}{more}"


def key_path(loc) -> str:
    """('augmentations', 0, 'crop_size') -> 'augmentations[0].crop_size'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_branch_tag(str(part)):
            out += f".{part}" if out else str(part)
    return out


# pydantic adds the branch of a union (e.g. 'int', 'constrained-str', 'list[constrained-str]') to a location
_TYPE_TAGS = {"int", "float", "str", "bool", "none", "dict", "list", "tuple", "is-instance", "json-or-python",
              "lax-or-strict", "nullable", "default"}


def _is_branch_tag(part: str) -> bool:
    head = part.split("[", 1)[0]
    return head in _TYPE_TAGS or head.startswith(("constrained-", "function-", "union", "tagged-union", "lax-"))


def _allowed(error: dict) -> str:
    if error["type"] in ("model_type", "dict_type", "model_attributes_type", "dataclass_type"):
        return "must be a mapping of keys"
    msg = error["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    return msg.replace("input should be", "must be").replace("value error, ", "")


def allowed_keys(model, loc) -> list[str]:
    """The keys of the (nested) model at `loc`, for 'unknown key' messages."""
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        model = _model_in(field.annotation) if field is not None else None
    return list(getattr(model, "model_fields", {})) if model is not None else []


def _model_in(annotation):
    """The BaseModel inside X | None, list[X], dict[str, X] or Annotated[X, ...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
