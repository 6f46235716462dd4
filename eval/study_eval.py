"""Final numbers of one study run: kNN and the linear probe on its last.ckpt, in-process.

Only last.ckpt is scored (never best.ckpt, which an online evaluation may have picked): nothing
in a study is chosen on the test split. The bank and test images are loaded once per study and
resolution; features are cached in the run folder (RUN/features), so a re-evaluation costs none.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gcl.eval.features import cached_features, checkpoint_encoder
from gcl.eval.linear import LinearRecipe, linear_accuracy
from gcl.eval.probe import load_pair
from gcl.eval.study_config import EvalSpec
from gcl.knn import knn_accuracy


def eval_device(spec: EvalSpec) -> str:
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


class EvalData:
    """The study's bank and test sets, loaded at most once per resolution."""

    def __init__(self, spec: EvalSpec):
        self.spec, self._sets = spec, {}

    def at(self, resolution: int | None):
        if resolution not in self._sets:
            self._sets[resolution] = load_pair(self.spec.bank, self.spec.test, resolution, self.spec.limit_bank,
                                               self.spec.limit_test)
        return self._sets[resolution]


def evaluate_checkpoint(ckpt: Path, data: EvalData, cache_dir: Path, log=print) -> dict:
    """kNN (k, T from the study) and, when asked, the linear probe (eval/linear.py's defaults)."""
    spec = data.spec
    encoder = checkpoint_encoder(ckpt, eval_device(spec))
    bank, test, num_classes = data.at(encoder.resolution)
    feats = {}
    for name, ds in (("bank", bank), ("test", test)):
        feats[name], hit = cached_features(encoder, ds.images, ds.labels, cache_dir, spec.batch_size, log=log)
        log(f"  {name} features {tuple(feats[name].shape)} ({'cache' if hit else 'extracted'})")
    ybank, ytest = torch.from_numpy(bank.labels), torch.from_numpy(test.labels)
    knn = knn_accuracy(feats["bank"], ybank, feats["test"], ytest, num_classes, k=spec.k, temperature=spec.temperature)
    out = {"knn_top1": float(knn["top1"]), "knn_top5": float(knn["top5"]), "n_bank": int(len(ybank)),
           "n_test": int(len(ytest)), "feature_dim": int(feats["bank"].shape[1]), "ckpt_id": encoder.id}
    if spec.linear:
        recipe = LinearRecipe()
        lin = linear_accuracy(feats["bank"], ybank, feats["test"], ytest, num_classes, recipe)
        out.update(linear_top1=float(lin["top1"]), linear_top5=float(lin["top5"]), linear_epochs=recipe.epochs)
    return out
