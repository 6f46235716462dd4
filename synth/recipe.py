"""Latent-augmentation recipes: the grammar, the presets, and each view's drawn values.

A recipe is an ordered list of ops, each with parameter ranges, written as a spec string:

    noise(strength=0.25..0.75)
    mask(ratio=0.1..0.3, fill=noise|codes, p=0.5); noise(strength=0.2..0.4)
    vq_replace(ratio=0.05..0.2)
    noise(strength=0.1..0.3); sdedit(strength=0.2..0.6, steps=20)     # diffusion
    resample(ratio=0.2..0.6, steps=8)                                   # maskgit
    remask(ratio=0.25..0.75)                                            # mae

The last three are generator ops: they leave the latent alone and hand their drawn values to
the generator's own sampler (Generator.sample), so they must come last, one per recipe.

`a..b` draws uniformly per view, `x|y` draws a choice, a plain value is fixed, and `p` is the
probability that the op is applied to a view. Every drawn value and the seed are recorded, so a
view can be regenerated exactly from its sample's JSON. The ops themselves are in synth/augment.py;
this module only knows their names and parameters (OP_PARAMS).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from gcl.errors import UserError

PRESETS = {
    # 0.5 latent-std noise keeps content and invents new detail on TAEF2 (23.7 dB at 64 px);
    # the range spans "close to the source" to "clearly new texture".
    "noise": "noise(strength=0.25..0.75)",
    "mask": "mask(ratio=0.1..0.4, fill=noise)",
    "mix": "mix(ratio=0.1..0.3)",
    "tokens": "vq_replace(ratio=0.05..0.2); vq_swap(ratio=0.1..0.3, k=8)",
    # SDEdit: strength 0.2-0.6 keeps the layout and redraws texture; 20 steps over the full
    # schedule is what DDIM needs for clean images (the loop runs strength x steps of them).
    "sdedit": "sdedit(strength=0.2..0.6, steps=20)",
    # MaskGIT: 20-60% of tokens redrawn in 8 confidence-ordered steps (aMUSEd's img2img range).
    "resample": "resample(ratio=0.2..0.6, steps=8)",
    # MAE: the model was trained at 75% masking; 25-75% spans mild to strong re-imagination.
    "remask": "remask(ratio=0.25..0.75)",
    # ESRGAN: noise on the first feature map, relative to its std (see generators/esrgan.py).
    # Measured on CIFAR-10 at 64 px: a view is 29 dB from the plain 4x reconstruction at 0.25
    # and 20 dB at 1.0 (the reconstruction itself is ~23 dB from the input).
    "esrgan": "noise(strength=0.25..1.0)",
}

# op -> the parameters it takes (besides p); the functions are synth/augment.py's OPS (same names)
OP_PARAMS = {
    "noise": {"strength"},
    "mask": {"ratio", "fill"},
    "mix": {"ratio"},
    "vq_replace": {"ratio"},
    "vq_swap": {"ratio", "k"},
    "sdedit": {"strength", "steps"},
    "resample": {"ratio", "steps"},
    "remask": {"ratio"},
}
TOKEN_OPS = {"vq_replace", "vq_swap"}
GENERATOR_OPS = {"sdedit": "diffusion", "resample": "maskgit", "remask": "mae"}  # op -> family that runs it
_OPTIONAL_DEFAULTS = {"mask": {"fill": "noise"}, "vq_swap": {"k": 8.0}}
_INTEGER_PARAMS = {"steps"}  # drawn as whole numbers: a step count


class RecipeError(UserError):
    """A recipe spec that cannot be parsed or names unknown ops/params."""


@dataclass(frozen=True)
class OpSpec:
    op: str
    params: dict  # name -> (lo, hi) float range | tuple[str, ...] choices | scalar
    p: float = 1.0

    def to_json(self) -> dict:
        return {"op": self.op, "p": self.p, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}


@dataclass(frozen=True)
class Recipe:
    ops: tuple[OpSpec, ...]
    spec: str = ""

    @property
    def view_op(self) -> str | None:
        """The generator op this recipe ends with (sdedit/resample/remask), if any."""
        return self.ops[-1].op if self.ops and self.ops[-1].op in GENERATOR_OPS else None

    @property
    def needs_codebook(self) -> bool:
        return any(o.op in TOKEN_OPS or "codes" in o.params.get("fill", ()) for o in self.ops)

    def to_json(self) -> dict:
        return {"spec": self.spec, "ops": [o.to_json() for o in self.ops]}


# ---------------------------------------------------------------- parsing

_OP_RE = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


def parse_recipe(spec: str) -> Recipe:
    """Parse a spec string or preset name; raises RecipeError with a one-line message."""
    spec = PRESETS.get(spec.strip(), spec.strip())
    ops = []
    for part in filter(None, (s.strip() for s in spec.split(";"))):
        m = _OP_RE.match(part)
        if not m or m.group(1) not in OP_PARAMS:
            raise RecipeError(f"unknown op in recipe: {part!r}; ops are {', '.join(OP_PARAMS)} (presets: {', '.join(PRESETS)})")
        name, body = m.group(1), m.group(2) or ""
        allowed = OP_PARAMS[name]
        params, p = dict(_OPTIONAL_DEFAULTS.get(name, {})), 1.0
        for kv in filter(None, (s.strip() for s in body.split(","))):
            if "=" not in kv:
                raise RecipeError(f"{name}: expected name=value, got {kv!r}")
            key, value = (s.strip() for s in kv.split("=", 1))
            if key == "p":
                p = _float(name, key, value)
                continue
            if key not in allowed:
                raise RecipeError(f"{name} has no parameter {key!r}; it takes {', '.join(sorted(allowed | {'p'}))}")
            params[key] = _parse_value(name, key, value)
        missing = allowed - set(params)
        if missing:
            raise RecipeError(f"{name} needs {', '.join(sorted(missing))} (e.g. {name}({sorted(missing)[0]}=0.1..0.3))")
        ops.append(OpSpec(name, params, p))
    if not ops:
        raise RecipeError("empty recipe")
    for i, o in enumerate(ops):
        if o.op in GENERATOR_OPS and i != len(ops) - 1:
            raise RecipeError(f"{o.op} runs the generator's sampler: it must be the last op of the recipe")
        if o.op in GENERATOR_OPS:
            _check_ranges(o)
    return Recipe(tuple(ops), spec)


def _check_ranges(o: OpSpec) -> None:
    """Generator ops: strength/ratio in [0, 1], steps >= 1."""
    for key, v in o.params.items():
        lo, hi = v if isinstance(v, tuple) else (v, v)
        if key == "steps" and lo < 1:
            raise RecipeError(f"{o.op}.steps must be >= 1, got {lo:g}")
        if key in ("strength", "ratio") and not (0 <= lo and hi <= 1):
            raise RecipeError(f"{o.op}.{key} must lie in [0, 1], got {lo:g}..{hi:g}")


def _float(op: str, key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise RecipeError(f"{op}.{key}: {value!r} is not a number") from None


def _parse_value(op: str, key: str, value: str):
    if key == "fill":
        choices = tuple(v.strip() for v in value.split("|"))
        bad = [c for c in choices if c not in ("noise", "codes")]
        if bad:
            raise RecipeError(f"{op}.fill must be noise or codes, got {bad[0]!r}")
        return choices
    if ".." in value:
        lo, hi = (_float(op, key, v) for v in value.split("..", 1))
        if hi < lo:
            raise RecipeError(f"{op}.{key}: range {value} is reversed")
        return (lo, hi)
    return _float(op, key, value)


# ---------------------------------------------------------------- drawing one view's values


def view_seed(seed: int, key: str, view: int) -> int:
    """64-bit seed from (global seed, sample key, view index): any view can be regenerated alone."""
    digest = hashlib.sha256(f"{seed}/{key}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw(spec: OpSpec, rng: np.random.Generator) -> dict | None:
    """Draw this view's values for one op; None when the op is skipped (probability p)."""
    if spec.p < 1.0 and rng.random() >= spec.p:
        return None
    out = {}
    for k, v in sorted(spec.params.items()):
        if isinstance(v, tuple) and isinstance(v[0], str):
            out[k] = v[int(rng.integers(0, len(v)))]
        elif isinstance(v, tuple) and k in _INTEGER_PARAMS:
            out[k] = int(rng.integers(int(v[0]), int(v[1]) + 1))  # inclusive integer range
        elif isinstance(v, tuple):
            out[k] = round(float(rng.uniform(v[0], v[1])), 6)  # rounded: the JSON value IS the value used
        elif k in _INTEGER_PARAMS:
            out[k] = int(v)
        else:
            out[k] = v
    return out
