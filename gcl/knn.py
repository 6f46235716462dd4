"""Weighted cosine kNN classifier on frozen features (one implementation for gcl-eval and the
online evaluation in gcl-train), computed by lightly's `knn_predict` and `mean_topk_accuracy`.

The vote follows Wu et al. (2018), as solo-learn and lightly report it: each of the k nearest
training features votes for its class with weight exp(cos / T). gcl adds what lightly leaves to
its caller: L2-normalised features (cosine similarity), k capped at the bank size, and test
features taken in chunks so a large query set never builds one (N_test, N_train) matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_K = 20  # solo-learn / lightly report k=20
DEFAULT_TEMPERATURE = 0.07  # solo-learn / lightly report T=0.07


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class indices (N_test, num_classes) of each test feature, most voted first (column 0 is
    the top-1 prediction), as lightly's knn_predict returns them."""
    from lightly.utils.benchmarking import knn_predict as lightly_knn_predict  # lazy: gcl-eval --help stays quick

    bank = F.normalize(train_features.float(), dim=1).T.contiguous()  # (D, N_train), lightly's layout
    labels = train_labels.long()
    k = min(k, bank.shape[1])
    ranked = []
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        ranked.append(lightly_knn_predict(test, bank, labels, num_classes, knn_k=k, knn_t=temperature))
    return torch.cat(ranked)


def ranked_accuracy(ranked: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{'top1': %, 'top5': %} from class indices ranked best first; k is capped at the number of classes."""
    from lightly.utils.benchmarking.topk import mean_topk_accuracy

    acc = mean_topk_accuracy(ranked, labels.long().to(ranked.device), k=ks)
    return {f"top{k}": 100.0 * float(acc[k]) for k in ks}


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{'top1': %, 'top5': %} from class scores (e.g. a linear probe's logits)."""
    return ranked_accuracy(scores.argsort(dim=1, descending=True), labels, ks)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes, k=DEFAULT_K,
                 temperature=DEFAULT_TEMPERATURE) -> dict[str, float]:
    ranked = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return ranked_accuracy(ranked, test_labels)
