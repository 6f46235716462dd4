"""Weighted cosine kNN classifier on frozen features (one implementation for gcl-eval and the
online evaluation in gcl-train).

The vote follows Wu et al. (2018), as solo-learn and lightly report it: each of the k nearest
training features votes for its class with weight exp(cos / T).
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
    """Class scores (N_test, num_classes) for each test feature; rank them for top-1/top-5."""
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        sim = test @ train.T  # (B, N_train) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(test.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, labels[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{'top1': %, 'top5': %} from class scores; k is capped at the number of classes."""
    out = {}
    ranked = scores.argsort(dim=1, descending=True)
    for k in ks:
        kk = min(k, scores.shape[1])
        hit = (ranked[:, :kk] == labels.view(-1, 1)).any(dim=1).float().mean().item()
        out[f"top{k}"] = 100.0 * hit
    return out


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes, k=DEFAULT_K,
                 temperature=DEFAULT_TEMPERATURE) -> dict[str, float]:
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return topk_accuracy(scores, test_labels.long())
