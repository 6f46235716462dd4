"""The gcl-train recipe schema: every key a recipe (and run.json's stored options) may hold, with
its type and range. A recipe follows solo-learn's published CIFAR recipes (field names of its
augmentation and optimizer blocks included), so numbers compare with its tables.

parse_recipe(mapping, source) is the one way in: unknown keys, wrong types ("no" for a bool, "0.4"
for a number, 2.5 for an integer), NaN/inf and out-of-range values are one ConfigError line naming
the source, the key and what it allows. Upper bounds keep a shared file from asking for more
memory or time than any real run needs (each says why); rules between keys live in config.validate.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, BeforeValidator, Field, PlainSerializer, model_validator

from gcl.errors import UserError
from gcl.schema import MAX_TEXT, SharedModel, parse
from gcl.pairing import TOKENS

METHODS = ("simclr", "byol", "mocov2plus", "barlow_twins", "vicreg", "simsiam", "supcon")
PAIRINGS = ("any", "orig+gen", "gen+gen")
# Lightning's precision names; "auto" picks fp32 on CPU and mixed precision on GPUs.
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


class ConfigError(UserError):
    """A recipe or option that cannot be used; the message is one line that says what to do."""


Prob = Annotated[float, Field(ge=0.0, le=1.0)]
# A colour-jitter strength s draws factors from [1-s, 1+s]: past 4 every image is washed out or burnt.
Jitter = Annotated[float, Field(ge=0.0, le=4.0)]
# Learning rates at batch 256: solo-learn's largest is 1.0 (LARS); 100 is far past any that trains.
Rate = Annotated[float, Field(ge=0.0, le=100.0)]
# 10^5 epochs is 100x solo-learn's longest schedule; bounds epoch counts and epoch-based schedules.
MAX_EPOCHS = 100_000
# Step counts (checkpoint interval, epoch cap): 10^9 steps is centuries of training.
Steps = Annotated[int, Field(ge=0, le=10**9)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
# A file or URL. Python callers may pass a pathlib.Path; a recipe or run.json (YAML/JSON) holds text only.
PathText = Annotated[Text, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]


def _numbers(count: int):
    """A list of `count` values -> a tuple (YAML and JSON have no tuples); another length is one clear
    error before the values are looked at."""

    def check(value):
        if isinstance(value, (list, tuple)):
            if len(value) != count:
                raise ValueError(f"must hold {count} numbers")
            return tuple(value)
        return value

    return BeforeValidator(check)


def _one_or_list(value):
    return [value] if isinstance(value, (dict, str, os.PathLike)) else value


def _members(value):
    """'orig,orig,gen' -> ['orig', 'orig', 'gen'] (the command line's spelling)."""
    return [t.strip() for t in value.split(",") if t.strip()] if isinstance(value, str) else value


class AugConfig(SharedModel):
    """Handcrafted augmentation of one view, with solo-learn's field names and CIFAR defaults."""

    # training resolution (CIFAR-10's native 32 px by default); from 8 px (a ViT's 4 px patches need
    # a 2x2 grid) to 4096 px (a batch of 256 such crops is already 48 GB of floats)
    crop_size: Annotated[int, Field(ge=8, le=4096)] = 32
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.08  # RandomResizedCrop's area bounds, SimCLR's values
    max_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    brightness: Jitter = 0.4
    contrast: Jitter = 0.4
    saturation: Jitter = 0.2
    hue: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1  # a hue shift of half the colour wheel is the most there is
    color_jitter_prob: Prob = 0.8
    gray_scale_prob: Prob = 0.2
    # off unless a recipe asks: solo-learn's CIFAR files differ (0.5 symmetric, 0 asymmetric/VICReg)
    gaussian_prob: Prob = 0.0
    solarization_prob: Prob = 0.0
    equalization_prob: Prob = 0.0
    horizontal_flip_prob: Prob = 0.5

    @model_validator(mode="after")
    def _scales_in_order(self):
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is above max_scale {self.max_scale}")
        return self


class OptimConfig(SharedModel):
    name: Literal["sgd", "lars", "adamw"] = "lars"  # solo-learn's CIFAR default for most methods
    lr: Rate = 0.4  # at batch 256; scaled linearly by total batch / 256 like solo-learn
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-5  # 1.0 already erases the weights each step
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # 1.0 never forgets a gradient
    eta_lars: Annotated[float, Field(gt=0.0, le=1.0)] = 0.02  # LARS trust coefficient, solo-learn's value
    exclude_bias_n_norm: bool = True  # no weight decay / LARS adaptation on biases and norms
    classifier_lr: Rate = 0.1  # online linear probe, its own lr and no weight decay
    betas: Annotated[tuple[Annotated[float, Field(ge=0.0, lt=1.0)], ...], _numbers(2)] = (0.9, 0.999)  # adamw only


class SchedConfig(SharedModel):
    name: Literal["warmup_cosine", "none"] = "warmup_cosine"  # per-step linear warmup then cosine; "none": fixed lr
    # solo-learn's CIFAR warmup; at most WARMUP_MAX_FRACTION of the run's epochs (config.warmup_epochs)
    warmup_epochs: Annotated[float, Field(ge=0.0, le=MAX_EPOCHS)] = 10.0
    warmup_start_lr: Rate = 0.0
    min_lr: Rate = 0.0


# Projector / predictor widths: 32768^2 fp32 weights are 4 GiB, far past the literature's (BYOL: 4096).
Width = Annotated[int, Field(ge=1, le=32768)]


class MethodKwargs(SharedModel):
    """Every method's own options (train/methods/*.py default_kwargs), typed; which of them a method
    takes is checked by its check_kwargs (gcl.train.methods), before any data is read, which also
    names a key no method has ("unknown method_kwargs K for METHOD; allowed: ..."): such keys are
    let through here only as plain numbers."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Annotated[float, Field(ge=-1e9, le=1e9)]]

    proj_hidden_dim: Width | None = None
    proj_output_dim: Width | None = None
    pred_hidden_dim: Width | None = None
    # softmax temperature: below 1e-3 the logits of cosine similarities pass 1000 and saturate
    temperature: Annotated[float, Field(ge=1e-3, le=100.0)] | None = None
    queue_size: Annotated[int, Field(ge=1, le=1 << 20)] | None = None  # MoCo negatives: 2^20 x 256-d is 1 GiB
    base_tau: Prob | None = None  # EMA rates of the target network
    final_tau: Prob | None = None
    lamb: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # Barlow Twins off-diagonal weight (0.0051)
    scale_loss: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    # VICReg's loss weights (25, 25, 1) and SupCon's weight of a generated positive (1.0)
    sim_loss_weight: Annotated[float, Field(ge=0.0, le=1e4)] | None = None
    var_loss_weight: Annotated[float, Field(ge=0.0, le=1e4)] | None = None
    cov_loss_weight: Annotated[float, Field(ge=0.0, le=1e4)] | None = None
    gen_positive_weight: Annotated[float, Field(ge=0.0, le=100.0)] | None = None


def _given(kwargs: MethodKwargs) -> dict:
    return kwargs.model_dump(exclude_none=True)


class TrainConfig(SharedModel):
    """A run's options: a recipe, run.json's stored options and the command line all land here."""

    method: Literal[METHODS] = "simclr"
    # gcl.backbones.BACKBONES, or timm:NAME for any timm model: config.validate checks the name (and
    # that the CIFAR stem applies), with the list of names in its one line
    backbone: Annotated[Text, Field(max_length=256)] = "resnet18"
    backbone_weights: PathText | None = None  # local .safetensors: a pretrained start for the backbone
    cifar_stem: bool = True  # 32-64 px inputs; turn off for 224 px data
    # stored as the plain dict of the kwargs given (the method fills in its own defaults)
    method_kwargs: Annotated[MethodKwargs, AfterValidator(_given), PlainSerializer(dict)] = Field(default_factory=dict)
    optimizer: OptimConfig = Field(default_factory=OptimConfig)
    scheduler: SchedConfig = Field(default_factory=SchedConfig)
    # One entry: the same augmentation for every view; two: asymmetric (BYOL-style) per view;
    # more: view position i uses entry i mod the list's length (e.g. a milder third view). At most
    # one per member of a family (64).
    augmentations: Annotated[list[AugConfig], Field(min_length=1, max_length=64), BeforeValidator(_one_or_list)] = \
        Field(default_factory=lambda: [AugConfig()])
    # Optional: the augmentation of members that are generated views (e.g. weaker than the
    # default on originals); None: generated members get the default entry like any member.
    gen_augmentations: AugConfig | None = None
    # Per-channel statistics of [0, 1] pixels (CIFAR-10's by default). A std under 0.01 multiplies
    # pixels by more than 100 (0 divides by zero: a NaN loss).
    mean: Annotated[tuple[Annotated[float, Field(ge=0.0, le=1.0)], ...], _numbers(3)] = (0.4914, 0.4822, 0.4465)
    std: Annotated[tuple[Annotated[float, Field(ge=0.01, le=1.0)], ...], _numbers(3)] = (0.2470, 0.2435, 0.2616)
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 100
    # families per step per device, as solo-learn counts it; 65536 32-px families are ~2.4 GB per view
    batch_size: Annotated[int, Field(ge=2, le=65536)] = 256
    # data: a manifest, brace pattern(s) or tar list; 10^6 entries is an ImageNet-21k set in 14-image shards
    shards: Annotated[list[PathText], Field(max_length=10**6), BeforeValidator(_one_or_list)] = \
        Field(default_factory=list)
    shards_base: PathText | None = None  # read manifest shards from here (folder, http(s), or a typed pipe:CMD)
    input: PathText | None = None  # plain npz / ImageFolder instead of shards (handcrafted only)
    verify: bool = True  # check shards against the manifest (sha256, counts, K, labels) before training
    gen_prob: Prob = 0.5  # per chosen view: probability that it is a generated one
    pairing: Literal[PAIRINGS] = "any"
    # >=2: M members per family for supcon; 64 views of each image per step is past any method
    family_views: Annotated[int, Field(ge=0, le=64)] = 0
    # Exact member types per family, in order (train/pairing.py): orig | gen | gen?; e.g.
    # [orig, orig, gen] (extra generated positive) vs [orig, orig, orig] (its control). Empty:
    # built from pairing and family_views.
    members: Annotated[list[Literal[TOKENS]], Field(max_length=64), BeforeValidator(_members)] = \
        Field(default_factory=list)
    # samples per worker (~10 shards of 200 mixed); 10^6 families held per worker is tens of GB
    shuffle_buffer: Annotated[int, Field(ge=1, le=10**6)] = 2000
    # -1: one per CPU core, at most 8; each worker is a process with its own buffer: 256 is past any node
    num_workers: Annotated[int, Field(ge=-1, le=256)] = -1
    # online evaluation
    eval_train: PathText | None = None  # labelled set for the kNN bank (npz / ImageFolder / shards)
    # labelled queries held out of the training data: the only metric that selects best.ckpt
    eval_val: PathText | None = None
    eval_test: PathText | None = None  # labelled queries, reported (test_*) but never used to select
    eval_every: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 1  # epochs
    # images per eval set (0: all); CIFAR's 50k bank costs more than it tells; 10^7 is ImageNet x 8
    eval_limit: Annotated[int, Field(ge=0, le=10**7)] = 10000
    # run: Lightning takes seeds in [0, 2^32) and silently draws a random one outside
    seed: Annotated[int, Field(ge=0, lt=1 << 32)] = 0
    output: PathText = "runs/default"
    devices: Annotated[int, Field(ge=1, le=1024)] = 1  # per node
    num_nodes: Annotated[int, Field(ge=1, le=4096)] = 1
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    precision: Literal[PRECISIONS] = "auto"  # fp32 on CPU; bf16-mixed on GPUs that support it, else 16-mixed
    ckpt_every_steps: Steps = 200  # a killed run loses at most this many steps
    max_steps_per_epoch: Steps = 0  # >0 caps an epoch (smoke tests, benchmarks)
    # >0: also write checkpoints/avg.ckpt, the mean of the weights at the end of each of the last N
    # epochs (a cheap way to damp the run-to-run scatter of the final weights; last.ckpt is unchanged)
    average_last_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 0

    def to_dict(self) -> dict:
        """Plain types only (lists, not tuples): stored in checkpoints loaded with weights_only."""
        return _plain(self.model_dump())


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def parse_recipe(mapping, source: str, option_keys: frozenset = frozenset()) -> TrainConfig:
    """A TrainConfig from a recipe's mapping (or run.json's stored options, or a merge of those with
    command-line options), or one ConfigError line: '{source}: key K: what K allows, got V'.
    option_keys: top-level keys whose values came from the command line (named as --options)."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source} must be a mapping of config keys, got {type(mapping).__name__}")

    def where(loc) -> str:
        top = loc[0] if loc else None
        return f"option --{top.replace('_', '-')}" if top in option_keys else source

    return parse(TrainConfig, mapping, where, ConfigError)
