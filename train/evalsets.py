"""Labelled image sets for online evaluation: the kNN bank (--eval-train), the validation queries
that select best.ckpt (--eval-val) and the test queries that are only reported (--eval-test).

Read with the core's labelled-data reader (gcl.labelled): gcl-train never imports gcl-eval.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from gcl.errors import UserError
from gcl.labelled import load_labelled
from gcl.train.epochs import DataError


def same_file(a: str, b: str) -> bool:
    """True when two specs name the same data (same resolved path)."""
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class LabelledTensors:
    """One online-eval set: uint8 NCHW images at the training resolution and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class EvalSets:
    """The kNN bank, the named query sets ("val" selects best.ckpt, "test" is only reported)."""

    bank: LabelledTensors
    queries: dict[str, LabelledTensors]
    num_classes: int

    def sizes(self) -> dict[str, int]:
        """Images per set: {"bank": N, "val": N, "test": N} (the sets given)."""
        return {"bank": len(self.bank.labels), **{name: len(q.labels) for name, q in self.queries.items()}}


def load_labelled_set(path: str, resolution: int, limit: int | None) -> LabelledTensors:
    """Read through the core's one labelled-data reader (gcl.labelled)."""
    try:
        data = load_labelled(path, resolution=resolution, limit=limit)
    except UserError as exc:
        raise DataError(f"online eval set {path}: {str(exc).splitlines()[0]}") from None
    images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2).contiguous()
    return LabelledTensors(images, torch.from_numpy(data.labels).long())


def load_eval_sets(cfg, resolution: int) -> EvalSets:
    limit = cfg.eval_limit or None
    bank = load_labelled_set(cfg.eval_train, resolution, limit)
    queries = {name: load_labelled_set(path, resolution, limit)
               for name, path in (("val", cfg.eval_val), ("test", cfg.eval_test)) if path}
    num_classes = int(max([bank.labels.max()] + [q.labels.max() for q in queries.values()])) + 1
    return EvalSets(bank, queries, num_classes)
