"""`gcl-train --output RUN --resume`: the run's options come back from RUN/run.json.

A resumed run is the same experiment: its options are restored, and an option given again must
agree with them. One that changes what the run computes (method, data, seed, epochs, lr, ...) is
refused in one line before any work starts; options that only change how the run is carried out
(loader workers, shard checks, where the same shards are read from, checkpoint frequency) may
differ. run.json keeps the options the run started with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from gcl.io import sha256_file
from gcl.manifest import read_json_file
from gcl.schema import OpenModel, SharedModel, parse
from gcl.train.config import ConfigError, TrainConfig, load_config, validate
from gcl.train.schema import MAX_EPOCHS, Text

# Options that change how a run is carried out, never what it computes.
HARMLESS = ("num_workers", "verify", "shards_base", "ckpt_every_steps", "output")
# Options that name files: compared by the file they point to, not by their spelling.
PATH_KEYS = ("shards", "input", "eval_train", "eval_val", "eval_test", "backbone_weights")
# Files up to this size are identified by sha256 at a run's start (a manifest, an npz, weights), so
# a resumed run may read the same bytes from another place; hashing a bigger one at every start
# would cost more than it saves (a shard set is identified by its manifest, which lists sha256s).
IDENTITY_MAX_BYTES = 1 << 30
# Config key -> the gcl-train option that sets it, where the two differ.
OPTION_NAMES = {"optimizer.name": "--optimizer", "optimizer.lr": "--lr"}


def _local(value) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value and not value.startswith("pipe:")


def _map_paths(config: dict, run_dir, convert) -> dict:
    out = dict(config)
    for key in (*PATH_KEYS, "shards_base"):
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [convert(v, run_dir) if _local(v) else v for v in value]
        elif _local(value):
            out[key] = convert(value, run_dir)
    return out


def _relative(path: str, run_dir) -> str:
    return os.path.relpath(os.path.abspath(os.path.expanduser(path)), os.path.abspath(run_dir))


def _anchored(path: str, run_dir) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(run_dir, path))


def portable_config(config: dict, run_dir) -> dict:
    """The config as stored in run.json and checkpoints: local paths relative to the run folder, so
    a run records no absolute path and still finds its data when the folder moves with it."""
    return dict(_map_paths(config, run_dir, _relative), output=".")


def data_identity(config: dict) -> dict:
    """file_identity of each path option, by option: what a run reads, whatever its place."""
    return {key: file_identity(config.get(key)) for key in PATH_KEYS}


def file_identity(value) -> str | None:
    """sha256 of the one local file a path option names (None for a folder, several files, a URL
    or a file over IDENTITY_MAX_BYTES)."""
    value = value[0] if isinstance(value, list) and len(value) == 1 else value
    try:
        if _local(value) and os.path.isfile(value) and os.path.getsize(value) <= IDENTITY_MAX_BYTES:
            return sha256_file(value)
    except OSError:
        pass
    return None


def relocated(stored: dict, config: dict) -> dict:
    """run.json's config with the path options of `config` (a resumed run's, already checked to
    name the same data): a run that was pointed at its moved data records their new place."""
    return {**stored, **{key: config[key] for key in PATH_KEYS if key in config}}


def anchored_config(stored: dict, run_dir) -> dict:
    """run.json's config with its relative paths made usable again (relative to the run folder)."""
    anchored = _map_paths(stored, run_dir, _anchored)
    if isinstance(stored.get("output", "."), str):  # anything else is left for the schema to refuse in one line
        anchored["output"] = str(run_dir)
    return anchored


Count = Annotated[int, Field(ge=0, le=10**15)]  # steps, samples: 10^15 is past any run


class Sitting(OpenModel):
    """One sitting of a run (gcl.provenance.code_version and the loader workers it used)."""

    version: Text | None = None
    commit: Text | None = None
    dirty: bool | None = None
    num_workers: Annotated[int, Field(ge=0, le=256)] | None = None


class RunFile(SharedModel):
    """RUN/run.json as gcl-train writes it (train/run.py). `config` holds the run's options; it is
    parsed by the recipe schema (parse_recipe) when the run is resumed."""

    config: dict
    status: Literal["running", "interrupted", "stopped", "finished"] | None = None
    method: Text | None = None
    shards: list[Text] | Text | None = None
    gen_prob: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = None
    epochs_done: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=65536)] | None = None
    world_size: Annotated[int, Field(ge=1, le=1 << 22)] | None = None
    steps_per_epoch: Count | None = None
    global_step: Count | None = None
    num_views_in_shards: Annotated[int, Field(ge=0, le=4096)] | None = None
    train_samples: Count | None = None
    skipped_samples: Count | None = None
    sittings: Annotated[list[Sitting], Field(max_length=10**5)] = Field(default_factory=list)
    # sha256 of each path option's file at the start (data_identity): the data, wherever they are
    data: dict[Text, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None] = Field(default_factory=dict)
    eval_sizes: dict[Text, Count] = Field(default_factory=dict)
    error: Annotated[str, Field(max_length=4096)] | None = None
    # a diverged run reports a NaN loss: kept as it is, never computed with
    final_metrics: dict[Text, Annotated[float, Field(allow_inf_nan=True)]] = Field(default_factory=dict)


def read_run(output: str | os.PathLike) -> dict:
    """RUN/run.json as written by gcl-train (checked against RunFile), or a one-line ConfigError."""
    path = Path(output) / "run.json"
    if not path.exists():
        raise ConfigError(f"--resume: {path} not found; {output} holds no gcl-train run to resume")
    info = read_json_file(path, "--resume: run file", ConfigError, max_bytes=16 << 20, finite=False)
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise ConfigError(f"--resume: {path} records no options ('config'); start a new run in another --output")
    parse(RunFile, info, f"--resume: {path}", ConfigError)
    return info


def is_complete(info: dict, epochs: int) -> bool:
    """The run finished and trained at least `epochs` epochs (the cli refuses a changed --epochs; a
    caller of train() may extend a finished run)."""
    return info.get("status") == "finished" and (info.get("epochs_done") or 0) >= epochs


def resume_config(output: str, recipe: str | None, overrides: dict, sets: tuple[str, ...] = (),
                  log=None) -> TrainConfig:
    """The stored config of the run in OUTPUT; options given again must agree with it (HARMLESS
    ones may differ and are used for this sitting). log: where a lowered worker count is said."""
    info = read_run(output)
    stored = anchored_config(info["config"], output)
    where = f"{Path(output) / 'run.json'}"
    try:
        saved = load_config(None, {}, base=stored, base_source="config")
    except ConfigError as exc:  # written by another version of gcl-train, or edited
        raise ConfigError(f"--resume: the options in {where} do not fit this gcl-train ({exc})") from None
    given = load_config(recipe, overrides, base=stored, base_source=f"{where} config", sets=sets)
    recorded = info.get("data") or {}

    def same_data(key: str, value) -> bool:  # the bytes the run started with, read from another place
        return recorded.get(key) is not None and file_identity(value) == recorded[key]

    changed = differences(saved.to_dict(), given.to_dict(), same_data=same_data)
    if changed:
        listed = ", ".join(f"{option_name(key)} {_show(new)} (the run's: {_show(old)})" for key, old, new in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(f"--resume: {listed}{more} would change the results of the run in {where}; a resumed run keeps "
                          "its options: drop them, or start a new run in another --output")
    base = saved.shards_base
    if base and not overrides.get("shards_base") and not base.startswith(("http://", "https://")) \
            and ("://" in base or ":" in base.split("/", 1)[0]):
        raise ConfigError(f"--resume: this run read its shards through {base[:60]!r}; a command runs only when typed: "
                          "give --shards-base again to resume")
    _check_data_found(stored, overrides, where)
    for key in (*HARMLESS, *PATH_KEYS):  # path options name the run's own files (checked above): read them there
        setattr(saved, key, getattr(given, key))
    cores = os.cpu_count() or 1
    if overrides.get("num_workers") is None and saved.num_workers > cores:
        # run.json may come from a bigger machine, or from someone else: a worker per core at most
        # (the count never changes the data order, train/data.py)
        (log or (lambda _line: None))(f"note: {where} asks for {saved.num_workers} loader workers; this machine has "
                                      f"{cores} cores: using {cores} (--num-workers N to choose)")
        saved.num_workers = cores
    saved.output = str(output)
    validate(saved)
    return saved


def _check_data_found(stored: dict, overrides: dict, where: str) -> None:
    """One line naming the path options whose files are not where run.json says and that were not
    given again: a run folder moved without its data (backbone_weights is read at a run's start
    only; a resumed run loads its checkpoint)."""
    missing = [key for key in PATH_KEYS if key != "backbone_weights" and not overrides.get(key)
               and any(_local(v) and not os.path.exists(v) for v in _listed(stored.get(key)))]
    if missing:
        named = ", ".join(option_name(key) for key in missing)
        raise ConfigError(f"--resume: the run's {named} {'is' if len(missing) == 1 else 'are'} not where {where} says "
                          f"(was the run folder moved without its data?): give {named} again with the data's place")


def differences(saved: dict, given: dict, prefix: str = "", same_data=None) -> list[tuple[str, object, object]]:
    """(key, saved value, given value) for each result-changing leaf that differs. same_data(key,
    given value): a path option naming another place that holds the run's own data is no change."""
    out = []
    for key in sorted(set(saved) | set(given)):
        name = f"{prefix}{key}"
        if not prefix and key in HARMLESS:
            continue
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{name}.")
        elif not prefix and key in PATH_KEYS:
            if _paths(a) != _paths(b) and not (same_data is not None and same_data(key, b)):
                out.append((name, a, b))
        elif a != b:
            out.append((name, a, b))
    return out


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _paths(value):
    """Local paths as the files they name (a run resumed from another folder spells them differently)."""
    if value is None:
        return None
    return [os.path.realpath(v) if _local(v) else v for v in _listed(value)]


def option_name(key: str) -> str:
    if key in OPTION_NAMES:
        return OPTION_NAMES[key]
    return "--" + key.replace("_", "-") if "." not in key else f"recipe key {key}"


def _show(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return str(value)
