"""The generator interface every family implements, and model-source helpers they share.

A generator is the image<->latent pair of a pretrained generative model:
    encode(x)  x: (B, 3, H, W) float in [0, 1]  ->  latent z (B, C, h, w)
    decode(z)  -> (B, 3, H, W) float in [0, 1] (clamped)
Families with a discrete codebook (VQGAN, image transformers) also expose tokens/embed/codebook
so that token-level augmentations can act on indices. Diffusion (img2img/SDEdit) and MaskGIT /
MAE families plug in behind the same two calls: their `decode` is where the new detail is made.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch

from gcl.errors import UserError


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
        return None if is_local(self.model_id) else self.model_id

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

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
    """`cls.from_pretrained(model)` with a one-line error that says what to do when it fails."""
    if not is_local(model) and ("/" not in model or model.startswith((".", "/"))):
        raise GeneratorLoadError(f"model {model!r} is neither a local directory nor a hub id (owner/name)")
    import warnings

    try:
        with warnings.catch_warnings():  # hub client deprecation chatter is not the user's business
            warnings.simplefilter("ignore")
            return cls.from_pretrained(model, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        if is_local(model):
            raise GeneratorLoadError(f"cannot load {cls.__name__} from {model}: {str(exc).splitlines()[0]}") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = "" if offline else " (set HF_HUB_OFFLINE=1 to fail fast without network)"
        raise GeneratorLoadError(
            f"cannot load hub model {model!r} (no network or not in the local cache){hint}; "
            f"download it elsewhere and pass --model PATH to its local directory"
        ) from None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC memory layout: oneDNN's convolutions run ~1.4x faster with it on CPU (measured with
    TAEF2 at 64 px, batch 32) and it is the layout tensor cores prefer on GPU."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
