"""Final numbers of one study run: kNN and the linear probe, in-process.

Scored checkpoints: last.ckpt (the run's final state; the study's verdict uses it) and, when the
study asks and the run wrote one, avg.ckpt (the mean of the last epochs' weights). Never
best.ckpt, which an online evaluation may have picked. Splits: `test` (bank -> test queries) and,
when the study names them, `val` (val_bank -> val_queries: train images held out of pretraining)
and `fit` (val_bank -> the pretraining images themselves, read from a shard set's originals).
A data spec may take a slice of a file, `FILE[A:B]` (images A..B-1 in file order). Each file is
opened once per resolution and its features are extracted once per checkpoint (cached in the run
folder): the slices of a file are slices of its features, so the validation split costs no
extraction when it comes from the bank's file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gcl.eval.features import checkpoint_encoder
from gcl.eval.linear import LinearRecipe, linear_accuracy
from gcl.eval.probe import check_classes, source_features
from gcl.eval.study.datafiles import DataSpec
from gcl.eval.study.schema import EvalSpec
from gcl.knn import knn_accuracy
from gcl.labelled import LabelledSource

def eval_device(spec: EvalSpec) -> str:
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


class EvalData:
    """The study's labelled files, opened at most once per (file, resolution) and read in batches."""

    def __init__(self, spec: EvalSpec, fit_manifest: Path | None = None):
        self.spec, self._files = spec, {}
        self.fit_manifest = fit_manifest  # the manifest of spec.fit_queries' shard set (the 'fit' split)

    def splits(self) -> dict[str, tuple[DataSpec, DataSpec]]:
        """split -> (bank, queries): test always, val when the study names it."""
        s = self.spec
        out = {}
        if s.test:
            out["test"] = (DataSpec.parse(s.bank).limited(s.limit_bank), DataSpec.parse(s.test).limited(s.limit_test))
        if s.val_queries:
            out["val"] = (DataSpec.parse(s.val_bank or s.bank), DataSpec.parse(s.val_queries))
        if s.fit_queries and self.fit_manifest is not None:
            out["fit"] = (DataSpec.parse(s.val_bank or s.bank), DataSpec(str(self.fit_manifest)))
        return out

    def rows_needed(self, path: str) -> int | None:
        """How many leading images of a file the splits read (None: all of them): a file is
        loaded and its features extracted only that far (limit_bank: 64 reads 64 images)."""
        stops = [ds.stop for pair in self.splits().values() for ds in pair if ds.path == path]
        return None if any(stop is None for stop in stops) else max(stops)

    def file(self, path: str, resolution: int | None) -> LabelledSource:
        key = (path, resolution)
        if key not in self._files:
            self._files[key] = LabelledSource(path, resolution, self.rows_needed(path))
        return self._files[key]


def score_checkpoint(ckpt: Path, data: EvalData, cache_dir: Path, log=print) -> dict:
    """{split: {knn_top1, knn_top5, linear_top1, linear_top5, n_bank, n_queries}} plus the
    checkpoint's id and feature width. kNN uses the study's k and T; the linear probe
    eval/linear.py's defaults."""
    spec = data.spec
    encoder = checkpoint_encoder(ckpt, eval_device(spec))
    feats: dict[str, torch.Tensor] = {}
    out: dict = {"ckpt_id": encoder.id}
    for split, (bank_spec, query_spec) in data.splits().items():
        sides = []
        for ds in (bank_spec, query_spec):
            whole = data.file(ds.path, encoder.resolution)
            if ds.path not in feats:
                feats[ds.path], hit = source_features(encoder, whole, cache_dir, spec.batch_size, log=log)
                log(f"  {Path(ds.path).name} features {tuple(feats[ds.path].shape)} ({'cache' if hit else 'extracted'})")
            idx = torch.tensor(list(ds.indices(len(whole.labels))), dtype=torch.long)
            labels = torch.from_numpy(whole.labels)[idx]
            sides.append((feats[ds.path][idx], labels, whole))
        (fb, yb, bank), (fq, yq, queries) = sides
        num_classes = check_classes(bank, queries)
        knn = knn_accuracy(fb, yb, fq, yq, num_classes, k=spec.k, temperature=spec.temperature)
        scores = {"knn_top1": float(knn["top1"]), "knn_top5": float(knn["top5"]), "n_bank": int(len(yb)),
                  "n_queries": int(len(yq))}
        if spec.linear:
            recipe = LinearRecipe()
            lin = linear_accuracy(fb, yb, fq, yq, num_classes, recipe)
            scores.update(linear_top1=float(lin["top1"]), linear_top5=float(lin["top5"]), linear_epochs=recipe.epochs)
        out[split] = scores
        out["feature_dim"] = int(fb.shape[1])
    return out


def evaluate_run(run_dir: Path, data: EvalData, log=print) -> dict:
    """Every checkpoint the study asks for that the run has: {'last': scores, 'avg': scores}."""
    found = {}
    for name in data.spec.checkpoints:
        ckpt = run_dir / "checkpoints" / f"{name}.ckpt"
        if ckpt.is_file():
            log(f"  scoring {name}.ckpt")
            found[name] = score_checkpoint(ckpt, data, run_dir / "features", log)
    return found
