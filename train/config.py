"""Run configuration: small typed dataclasses, filled from a YAML recipe and then CLI overrides.

A recipe (train/recipes/<dataset>/<method>.yaml) follows solo-learn's published CIFAR recipes
(field names of its augmentation and optimizer blocks included), so numbers compare with its
tables. Unknown keys anywhere are an error: a typo must not silently train with a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gcl.errors import UserError

RECIPES_DIR = Path(__file__).parent / "recipes"
METHODS = ("simclr", "byol", "mocov2plus", "barlow_twins", "vicreg", "simsiam", "supcon")
PAIRINGS = ("any", "orig+gen", "gen+gen")
# The LR warm-up never takes more than this fraction of a run's epochs: solo-learn's 10 warm-up
# epochs are made for 1000-epoch runs (1%); a 2-epoch smoke run would otherwise never leave them.
WARMUP_MAX_FRACTION = 0.1


class ConfigError(UserError):
    """A recipe or option that cannot be used; the message is one line that says what to do."""


@dataclass
class AugConfig:
    """Handcrafted augmentation of one view, with solo-learn's field names and CIFAR defaults."""

    crop_size: int = 32  # training resolution; CIFAR-10 native size
    min_scale: float = 0.08  # RandomResizedCrop lower bound, as in SimCLR / solo-learn
    max_scale: float = 1.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    color_jitter_prob: float = 0.8
    gray_scale_prob: float = 0.2
    gaussian_prob: float = 0.0  # off unless a recipe asks: solo-learn's CIFAR files differ (0.5 symmetric, 0 asymmetric/VICReg)
    solarization_prob: float = 0.0
    equalization_prob: float = 0.0
    horizontal_flip_prob: float = 0.5


@dataclass
class OptimConfig:
    name: str = "lars"  # solo-learn's CIFAR default for most methods; "sgd" and "adamw" too
    lr: float = 0.4  # at batch 256; scaled linearly by total batch / 256 like solo-learn
    weight_decay: float = 1e-5
    momentum: float = 0.9
    eta_lars: float = 0.02  # LARS trust coefficient, solo-learn's value
    exclude_bias_n_norm: bool = True  # no weight decay / LARS adaptation on biases and norms
    classifier_lr: float = 0.1  # online linear probe, its own lr and no weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only


@dataclass
class SchedConfig:
    name: str = "warmup_cosine"  # per-step linear warmup then cosine; "none" keeps lr fixed
    warmup_epochs: float = 10.0  # solo-learn's CIFAR warmup; at most WARMUP_MAX_FRACTION of the run's epochs
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    method: str = "simclr"
    backbone: str = "resnet18"  # gcl.backbones.BACKBONES, or timm:NAME for any timm model
    backbone_weights: str | None = None  # local .safetensors: a pretrained start for the backbone
    cifar_stem: bool = True  # 32-64 px inputs; turn off for 224 px data
    method_kwargs: dict = field(default_factory=dict)  # checked against the method's own defaults
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedConfig = field(default_factory=SchedConfig)
    # One entry: the same augmentation for every view; two: asymmetric (BYOL-style) per view;
    # more: view position i uses entry i mod the list's length (e.g. a milder third view).
    augmentations: list[AugConfig] = field(default_factory=lambda: [AugConfig()])
    # Optional: the augmentation of members that are generated views (e.g. weaker than the
    # default on originals); None: generated members get the default entry like any member.
    gen_augmentations: AugConfig | None = None
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)  # CIFAR-10 statistics
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    epochs: int = 100
    batch_size: int = 256  # per device, as solo-learn counts it
    # data
    shards: list[str] = field(default_factory=list)  # manifest, brace pattern(s) or tar list
    shards_base: str | None = None  # read manifest shards from here (folder, http(s), or a typed pipe:CMD)
    input: str | None = None  # plain npz / ImageFolder instead of shards (handcrafted only)
    verify: bool = True  # check shards against the manifest (sha256, counts, K, labels) before training
    gen_prob: float = 0.5  # per chosen view: probability that it is a generated one
    pairing: str = "any"
    family_views: int = 0  # >=2: feed M members per family to the multi-positive loss (supcon)
    # Exact member types per family, in order (gcl/pairing.py): orig | gen | gen?; e.g.
    # [orig, orig, gen] (extra generated positive) vs [orig, orig, orig] (its control). Empty:
    # built from pairing and family_views.
    members: list[str] = field(default_factory=list)
    shuffle_buffer: int = 2000  # samples per worker; ~10 shards of 200 mixed
    num_workers: int = -1  # -1: one per CPU core, at most 8
    # online evaluation
    eval_train: str | None = None  # labelled set for the kNN bank (npz / ImageFolder / shards)
    # labelled queries held out of the training data: the only metric that selects best.ckpt
    eval_val: str | None = None
    eval_test: str | None = None  # labelled queries, reported (test_*) but never used to select
    eval_every: int = 1  # epochs
    eval_limit: int = 10000  # images per eval set; CIFAR's 50k bank costs more than it tells
    # run
    seed: int = 0
    output: str = "runs/default"
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str = "auto"  # fp32 on CPU; bf16-mixed on GPUs that support it, else 16-mixed
    ckpt_every_steps: int = 200  # a killed run loses at most this many steps
    max_steps_per_epoch: int = 0  # >0 caps an epoch (smoke tests, benchmarks)
    # >0: also write checkpoints/avg.ckpt, the mean of the weights at the end of each of the last N
    # epochs (a cheap way to damp the run-to-run scatter of the final weights; last.ckpt is unchanged)
    average_last_epochs: int = 0

    def to_dict(self) -> dict:
        """Plain types only (lists, not tuples): stored in checkpoints loaded with weights_only."""
        return _plain(dataclasses.asdict(self))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _build(cls, data: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = {"optimizer": OptimConfig, "scheduler": SchedConfig}.get(key) if cls is TrainConfig else None
        if sub is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"'{key}' in {where} must be a mapping")
            value = _build(sub, value, f"{where}:{key}")
        elif cls is TrainConfig and key == "augmentations":
            value = [value] if isinstance(value, dict) else value
            if not isinstance(value, list) or not value:
                raise ConfigError(f"'augmentations' in {where} must be one mapping or a non-empty list of them "
                                  "(view position i uses entry i mod the list's length)")
            value = [_build(AugConfig, v, f"{where}:augmentations[{i}]") for i, v in enumerate(value)]
        elif cls is TrainConfig and key == "gen_augmentations" and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"'gen_augmentations' in {where} must be one mapping of augmentation fields")
            value = _build(AugConfig, value, f"{where}:gen_augmentations")
        elif cls is TrainConfig and key == "members":
            value = parse_members(value)
        elif isinstance(value, list) and key in ("mean", "std", "betas"):
            value = tuple(value)
        elif cls is TrainConfig and key == "shards" and isinstance(value, str):
            value = [value]
        kwargs[key] = value
    return cls(**kwargs)


def parse_members(value) -> list[str]:
    """'orig,orig,gen' or a list -> token list (validated later)."""
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ConfigError("'members' must be a list such as [orig, orig, gen] or a string 'orig,orig,gen'")
    return value


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


def load_config(recipe: str | None, overrides: dict, base: dict | None = None, sets: tuple[str, ...] = ()) -> TrainConfig:
    """Recipe values first, then every CLI option the user gave (None means 'not given').

    base: values under the recipe (a resumed run's stored config); without it, the defaults.
    sets: --set KEY.SUB=VALUE items (train/overrides.py), applied to the recipe mapping before it
    is checked, so they meet the same checks as the recipe's own values."""
    data: dict = dict(base or {})
    if recipe:
        path = resolve_recipe(recipe)
        try:
            recipe_data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(recipe_data, dict):
            raise ConfigError(f"recipe {path} must be a mapping of config keys")
        data.update(recipe_data)
        where = str(path)
        _no_commands(recipe_data, where)
    else:
        where = "options"
    if sets:
        from gcl.train.overrides import apply_sets

        data = apply_sets(data, sets, TrainConfig().to_dict())
        if any(item.partition("=")[0].split(".")[0].strip() == "shards" for item in sets):
            _no_commands({"shards": data["shards"]}, "--set")  # data from --set is checked like a recipe's
        where = f"{where} with --set"
    cfg = _build(TrainConfig, data, where)
    for key, value in overrides.items():
        if value is None or value == ():
            continue
        if key == "members":
            value = parse_members(value)
        target, attr = (cfg.optimizer, key[4:]) if key.startswith("opt_") else (cfg, key)
        setattr(target, attr, list(value) if isinstance(value, tuple) and key == "shards" else value)
    validate(cfg)
    return cfg


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
    from gcl.backbones import check_backbone

    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    check_backbone(cfg.backbone, cfg.cifar_stem)
    if cfg.backbone_weights and not os.path.isfile(cfg.backbone_weights):
        raise ConfigError(f"--backbone-weights {cfg.backbone_weights}: file not found")
    if cfg.pairing not in PAIRINGS:
        raise ConfigError(f"unknown pairing {cfg.pairing!r}; choose one of {', '.join(PAIRINGS)}")
    if not 0.0 <= cfg.gen_prob <= 1.0:
        raise ConfigError(f"--gen-prob must be in [0, 1], got {cfg.gen_prob}")
    if bool(cfg.shards) == bool(cfg.input):
        raise ConfigError("give exactly one of --shards (gcl-synth shards) or --input (npz / ImageFolder)")
    if cfg.input and cfg.gen_prob > 0 and (not cfg.members or "gen?" in cfg.members):
        raise ConfigError("--input has no generated views; use --gen-prob 0 or train on --shards")
    if cfg.family_views and cfg.family_views < 2:
        raise ConfigError("--family-views needs at least 2 members per family")
    _validate_members(cfg)
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ConfigError("--epochs must be >= 1 and --batch-size >= 2")
    if not isinstance(cfg.average_last_epochs, int) or not 0 <= cfg.average_last_epochs <= cfg.epochs:
        raise ConfigError(f"average_last_epochs must be an integer from 0 to the epochs ({cfg.epochs}), "
                          f"got {cfg.average_last_epochs!r}")
    if cfg.optimizer.name not in ("sgd", "lars", "adamw"):
        raise ConfigError(f"unknown optimizer {cfg.optimizer.name!r}; choose sgd, lars or adamw")
    crops = {a.crop_size for a in cfg.augmentations + ([cfg.gen_augmentations] if cfg.gen_augmentations else [])}
    if len(crops) != 1:
        raise ConfigError("all augmentation entries (gen_augmentations too) need the same crop_size")
    _validate_eval(cfg)


def _validate_members(cfg: TrainConfig) -> None:
    from gcl.pairing import TOKENS

    m = cfg.members
    bad = sorted(set(m) - set(TOKENS))
    if bad:
        raise ConfigError(f"unknown member type(s) {', '.join(bad)} in --members; use {', '.join(TOKENS)}")
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
