"""The generator interface every family implements, and model-source helpers they share.

A generator is the image<->latent pair of a pretrained generative model:
    encode(x)  x: (B, 3, H, W) float in [0, 1]  ->  latent z (B, C, h, w)
    decode(z)  -> (B, 3, H, W) float in [0, 1] (clamped)
Families with a discrete codebook (VQGAN, image transformers) also expose tokens/embed/codebook
so that token-level augmentations can act on indices.

Families whose decoder is itself a random process (diffusion SDEdit, MaskGIT resampling, MAE
re-masking) name the recipe op they consume in `view_op` and implement
    sample(z, params, gens) -> (B, 3, H, W) in [0, 1]
where params[i] holds image i's drawn values of that op (None: op skipped, plain decode) and
gens[i] is image i's own CPU torch.Generator, so a view never depends on its batch neighbours.
`decode(z)` is always the strength-0 output (the plain reconstruction), which residual views
subtract. Autoencoders and ESRGAN have no view op: their `sample` is `decode`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch

from gcl.errors import UserError
from gcl.synth.defaults import hub_reachable  # torch-free, shared with the CLI's early check



class GeneratorLoadError(UserError):
    """The model cannot be loaded; the message says what to pass instead (one line)."""


@dataclass
class Generator:
    family: str  # "taesd", "vqgan", ...
    model_id: str  # what the user passed (hub id or local path): where to load from, never written out
    downsample: int  # spatial factor between image and latent
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str = ""  # fingerprint of the weights actually loaded (see state_dict_sha256)
    has_codebook: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Identity by content, never by location: family, architecture, and (in the manifest and
        every sample) the weights' sha256. The same weights in another folder give the same id."""
        return f"{self.family}:{self.extra.get('arch', self.family)}"

    @property
    def hub_id(self) -> str | None:
        """The hub name the weights came from (a public name, not a local path), if any."""
        return self.model_id if "/" in self.model_id and not is_local(self.model_id) else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    # The recipe op whose drawn values `sample` consumes (e.g. "sdedit"); None for plain decoders.
    view_op = None

    def sample(self, z: torch.Tensor, params: list, gens: list) -> torch.Tensor:
        """Decode with per-image view parameters; plain decoders ignore them."""
        return self.decode(z)

    # Token interface, only for has_codebook=True families.
    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{self.family} has no codebook: token ops need a VQ generator")

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{self.family} has no codebook: token ops need a VQ generator")

    def codebook(self) -> torch.Tensor:
        raise TypeError(f"{self.family} has no codebook: token ops need a VQ generator")


def state_dict_sha256(*modules: torch.nn.Module) -> str:
    """Hash of parameter names and fp32 values: identical weights give the same id wherever loaded."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def is_local(model: str) -> bool:
    return os.path.exists(model)


def from_pretrained_or_explain(cls, model: str, **kwargs):
    """`cls.from_pretrained(model)` with a one-line error that says what to do when it fails.
    A hub id with the hub out of reach is looked up in the local cache only (fails in < 2 s)."""
    if not is_local(model) and ("/" not in model or model.startswith((".", "/"))):
        raise GeneratorLoadError(f"model {model!r} is neither a local directory nor a hub id (owner/name)")
    import warnings

    if not is_local(model) and not hub_reachable():
        kwargs["local_files_only"] = True
    try:
        with warnings.catch_warnings():  # hub client deprecation chatter is not the user's business
            warnings.simplefilter("ignore")
            return cls.from_pretrained(model, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        if is_local(model):
            raise GeneratorLoadError(f"cannot load {cls.__name__} from {model}: {str(exc).splitlines()[0]}") from None
        raise GeneratorLoadError(
            f"cannot load hub model {model!r} (hub out of reach and not in the local cache); "
            f"download it elsewhere and pass --model DIR (its local directory)"
        ) from None


def read_config(model: str, subfolder: str = "", filename: str = "config.json") -> dict:
    """A component's config file (local directory or cached/reachable hub id) without loading weights."""
    import json

    if is_local(model):
        path = os.path.join(model, subfolder, filename)
        if not os.path.isfile(path):
            raise GeneratorLoadError(f"{model} has no {os.path.join(subfolder, filename)}: not the expected model layout")
        with open(path) as fh:
            return json.load(fh)
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(model, filename, subfolder=subfolder or None, local_files_only=not hub_reachable())
    except Exception:  # noqa: BLE001 - every hub failure is the same user-fixable problem
        raise GeneratorLoadError(
            f"cannot load hub model {model!r} (hub out of reach and not in the local cache); "
            f"download it elsewhere and pass --model DIR (its local directory)"
        ) from None
    with open(path) as fh:
        return json.load(fh)


def read_optional_config(model: str, subfolder: str = "", filename: str = "config.json") -> dict | None:
    """Like read_config, but None when the file is not there (e.g. no model_index.json)."""
    try:
        return read_config(model, subfolder, filename)
    except GeneratorLoadError:
        return None


def component_dtype(config, dtype: torch.dtype) -> torch.dtype:
    """fp32 for a component whose config says `force_upcast: true` (the pipelines run such a
    VAE/VQ-GAN in fp32 next to a half-precision rest), else `dtype`."""
    if dtype in (torch.float16, torch.bfloat16) and getattr(config, "force_upcast", False):
        return torch.float32
    return dtype


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC memory layout: oneDNN's convolutions run ~1.4x faster with it on CPU (measured with
    TAEF2 at 64 px, batch 32) and it is the layout tensor cores prefer on GPU."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
