"""Run configuration: a recipe (train/recipes/<dataset>/<method>.yaml), then command-line options,
parsed once into the typed TrainConfig of train/schema.py (every key, its type and range), then
the rules between keys (validate). Unknown keys anywhere are an error: a typo must not silently
train with a default.
"""

from __future__ import annotations

import os
from pathlib import Path

from gcl.train.schema import (  # noqa: F401 - the config API
    METHODS, PAIRINGS, AugConfig, ConfigError, MethodKwargs, OptimConfig, SchedConfig, TrainConfig, parse_recipe,
)
from gcl.yamlsafe import read_shared_file

RECIPES_DIR = Path(__file__).parent / "recipes"
# The LR warm-up never takes more than this fraction of a run's epochs: solo-learn's 10 warm-up
# epochs are made for 1000-epoch runs (1%); a 2-epoch smoke run would otherwise never leave them.
WARMUP_MAX_FRACTION = 0.1


def resolve_recipe(spec: str) -> Path:
    """A path, or a bundled name: 'cifar10/simclr', 'cifar10/simclr.yaml', 'recipes/cifar10/simclr.yaml'."""
    p = Path(spec)
    if p.is_file():
        return p
    name = spec[len("recipes/"):] if spec.startswith("recipes/") else spec
    name = name if name.endswith(".yaml") else name + ".yaml"
    bundled = RECIPES_DIR / name
    if bundled.is_file():
        return bundled
    have = sorted(str(q.relative_to(RECIPES_DIR))[:-5] for q in RECIPES_DIR.glob("*/*.yaml"))
    raise ConfigError(f"recipe {spec!r} not found; pass a YAML path or one of: {', '.join(have)}")


def load_config(recipe: str | None, overrides: dict, base: dict | None = None,
                base_source: str = "options", sets: tuple[str, ...] = ()) -> TrainConfig:
    """Recipe values first, then every CLI option the user gave (None means 'not given'), parsed once.

    base: values under the recipe (a resumed run's stored config, read from base_source); without
    it, the defaults. sets: --set KEY.SUB=VALUE items (train/overrides.py), applied to the recipe
    mapping before it is parsed, so they meet the same schema as the recipe's own values."""
    data: dict = dict(base or {})
    where = base_source
    if recipe:
        path = resolve_recipe(recipe)
        recipe_data = read_recipe(path)
        data.update(recipe_data)
        where = f"recipe {path}"
        _no_commands(recipe_data, str(path))
    if sets:
        from gcl.train.overrides import apply_sets

        data = apply_sets(data, sets, TrainConfig().to_dict())
        if any(item.partition("=")[0].split(".")[0].strip() == "shards" for item in sets):
            _no_commands({"shards": data["shards"]}, "--set")  # data from --set is checked like a recipe's
        where = f"{where} with --set"
    given = {k: v for k, v in overrides.items() if v is not None and v != ()}
    for key, value in given.items():
        if key.startswith("opt_"):
            optimizer = data.get("optimizer", {})
            data["optimizer"] = {**optimizer, key[4:]: value} if isinstance(optimizer, dict) else optimizer
        else:
            data[key] = list(value) if isinstance(value, tuple) else value
    option_keys = frozenset("optimizer" if k.startswith("opt_") else k for k in given)
    cfg = parse_recipe(data, where, option_keys)
    validate(cfg)
    return cfg


def read_recipe(path: Path) -> dict:
    """A recipe file's mapping (YAML without aliases: gcl.yamlsafe), or one ConfigError line."""
    recipe_data = read_shared_file(path, "recipe", ConfigError) or {}
    if not isinstance(recipe_data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of config keys")
    return recipe_data


def _no_commands(data: dict, where: str) -> None:
    """A recipe is a file people share: it may name where shards are, never a command to read them
    with. webdataset runs `pipe:` locations through a shell, so a pipe: stream (or any scheme but
    http(s)) is taken only from the command line (--shards-base), never from a recipe."""
    locations = [("shards_base", data.get("shards_base"))]
    shards = data.get("shards")
    locations += [("shards", s) for s in (shards if isinstance(shards, list) else [shards])]
    for key, value in locations:
        if isinstance(value, str) and ("://" in value or ":" in value.split("/", 1)[0]) \
                and not value.startswith(("http://", "https://")):
            raise ConfigError(f"refusing {key} {value[:60]!r} in {where}: a recipe may name a folder or an http(s) "
                              "URL, never a command; give a pipe: stream on the command line (--shards-base)")


def validate(cfg: TrainConfig) -> None:
    """Rules between keys (each key's own type and range is the schema's)."""
    from gcl.backbones import check_backbone

    check_backbone(cfg.backbone, cfg.cifar_stem)  # a timm name must exist; the CIFAR stem must apply
    if cfg.backbone_weights and not os.path.isfile(cfg.backbone_weights):
        raise ConfigError(f"--backbone-weights {cfg.backbone_weights}: file not found")
    if bool(cfg.shards) == bool(cfg.input):
        raise ConfigError("give exactly one of --shards (gcl-synth shards) or --input (npz / ImageFolder)")
    if cfg.input and cfg.gen_prob > 0 and (not cfg.members or "gen?" in cfg.members):
        raise ConfigError("--input has no generated views; use --gen-prob 0 or train on --shards")
    if cfg.family_views and cfg.family_views < 2:
        raise ConfigError("--family-views needs at least 2 members per family")
    _validate_members(cfg)
    if cfg.average_last_epochs > cfg.epochs:
        raise ConfigError(f"average_last_epochs must be an integer from 0 to the epochs ({cfg.epochs}), "
                          f"got {cfg.average_last_epochs!r}")
    crops = {a.crop_size for a in cfg.augmentations + ([cfg.gen_augmentations] if cfg.gen_augmentations else [])}
    if len(crops) != 1:
        raise ConfigError("all augmentation entries (gen_augmentations too) need the same crop_size")
    _validate_eval(cfg)


def _validate_members(cfg: TrainConfig) -> None:
    m = cfg.members
    if m and len(m) < 2:
        raise ConfigError("--members needs at least 2 members per family")
    if m and cfg.pairing != "any":
        raise ConfigError("--members gives the member types itself; drop --pairing")
    if m and cfg.family_views and cfg.family_views != len(m):
        raise ConfigError(f"--family-views {cfg.family_views} disagrees with {len(m)} --members; drop --family-views")
    if family_count(cfg) > 2 and cfg.method != "supcon":
        raise ConfigError(f"{family_count(cfg)} members per family need the multi-positive loss: add --method supcon")
    if cfg.input and any(t == "gen" for t in m):
        raise ConfigError("--input has no generated views; use only 'orig' in --members or train on --shards")


def family_count(cfg: TrainConfig) -> int:
    """Members chosen per family (views per sample in a batch)."""
    return len(cfg.members) or cfg.family_views or 2


def _validate_eval(cfg: TrainConfig) -> None:
    queries = [p for p in (cfg.eval_val, cfg.eval_test) if p]
    if bool(cfg.eval_train) != bool(queries):
        raise ConfigError("online evaluation needs --eval-train (kNN bank) and --eval-val and/or --eval-test (queries)")
    same = lambda a, b: bool(a and b) and os.path.realpath(a) == os.path.realpath(b)  # noqa: E731
    if same(cfg.eval_val, cfg.eval_test):
        raise ConfigError("--eval-val and --eval-test are the same data: checkpoint selection must not see the "
                          "test set; hold a validation split out of the training data")
    if same(cfg.eval_val, cfg.eval_train):
        raise ConfigError("--eval-val is the kNN bank (--eval-train): every query would find itself; "
                          "use a separate held-out split")
    for path in (cfg.input, *cfg.shards):
        if same(cfg.eval_val, path) or same(cfg.eval_test, path):
            raise ConfigError(f"{path} is both training data and an evaluation query set; hold the queries out")


def resolution(cfg: TrainConfig) -> int:
    return cfg.augmentations[0].crop_size


def warmup_epochs(cfg: TrainConfig) -> float:
    """The recipe's warm-up, capped at WARMUP_MAX_FRACTION of the run's epochs."""
    return min(cfg.scheduler.warmup_epochs, WARMUP_MAX_FRACTION * cfg.epochs)


def default_workers(cfg: TrainConfig) -> int:
    return cfg.num_workers if cfg.num_workers >= 0 else min(8, os.cpu_count() or 1)
