"""The tiny classifier every third-party server in the integration tests serves (numpy only, no download).

Four float features in, one of three classes out: argmax(x @ W + b). ``predict`` rejects rows that are not
four finite numbers of magnitude below 1e9 (a well-formed request the model itself refuses), so a test can
provoke errors inside the model on purpose on every server.
"""

from __future__ import annotations

import numpy as np

W = np.array(
    [
        [1.0, -0.5, 0.2],
        [-0.3, 1.2, 0.1],
        [0.4, 0.3, -1.0],
        [0.0, -0.2, 1.1],
    ]
)
B = np.array([0.1, 0.0, -0.1])
N_FEATURES = 4


def predict(x: object) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != N_FEATURES or not np.all(np.isfinite(arr)) or np.abs(arr).max() >= 1e9:
        raise ValueError(f"expected rows of {N_FEATURES} finite numbers, got shape {arr.shape}")
    return np.argmax(arr @ W + B, axis=1).astype(np.int64)
