"""Maximum mean discrepancy with a permutation test; torch computes the kernel (imported only here)."""
from __future__ import annotations

import numpy as np


def mmd_permutation_test(ref: np.ndarray, cur: np.ndarray, permutations: int, max_samples: int,
                         rng: np.random.Generator) -> tuple[float, float]:
    """Biased MMD² with a Gaussian kernel (median-heuristic bandwidth) and its permutation p-value.

    Each sample is subsampled to ``max_samples`` rows so that the kernel matrix stays small.
    p-value = (1 + #{permuted MMD² >= observed}) / (1 + permutations).
    """
    import torch

    x = np.asarray(ref, dtype=float)
    y = np.asarray(cur, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    if len(y) > max_samples:
        y = y[rng.choice(len(y), max_samples, replace=False)]
    z = torch.from_numpy(np.concatenate([x, y])).double()
    d2 = torch.cdist(z, z).pow(2)
    med = torch.median(d2[d2 > 0]) if bool((d2 > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
    k = torch.exp(-d2 / med)
    n, m = len(x), len(y)
    total = n + m

    def stat(idx: torch.Tensor) -> torch.Tensor:
        # idx: (B, total) permutations; first n are "reference"
        w = torch.full((idx.shape[0], total), -1.0 / m, dtype=torch.float64)
        w.scatter_(1, idx[:, :n], 1.0 / n)
        return torch.einsum("bi,ij,bj->b", w, k, w)

    base = torch.arange(total).unsqueeze(0)
    observed = float(stat(base)[0])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    exceed = 0
    done = 0
    while done < permutations:
        b = min(64, permutations - done)
        perms = torch.argsort(torch.rand(b, total, generator=gen), dim=1)
        exceed += int((stat(perms) >= observed - 1e-12).sum())
        done += b
    return max(observed, 0.0), (1 + exceed) / (1 + permutations)
