"""The demo classifier: a small PyTorch MLP on scikit-learn's digits, trained deterministically.

    >>> reg = ModelRegistry(Path("registry"))
    >>> meta = train_version(reg, "v1")                      # ~0.95+ holdout accuracy, a few seconds
    >>> bad = train_version(reg, "v2", shuffle_labels=True)  # a broken release, accuracy ~0.1
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from remediation.registry import ModelRegistry

log = logging.getLogger(__name__)

N_FEATURES = 64
N_CLASSES = 10
FEATURE_NAMES = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True, slots=True)
class DigitsSplit:
    """The fixed train/holdout split of sklearn's digits (float32 inputs in 0..16, int64 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    feature_names: tuple[str, ...]


def load_digits_split(holdout_fraction: float = HOLDOUT_FRACTION, seed: int = SPLIT_SEED) -> DigitsSplit:
    """The train/holdout split every version and the traffic driver share (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_ho, y_tr, y_ho = train_test_split(x.astype(np.float32), y.astype(np.int64),
                                              test_size=holdout_fraction, random_state=seed, stratify=y)
    return DigitsSplit(x_tr, y_tr, x_ho, y_ho, tuple(FEATURE_NAMES))


def default_arch() -> dict[str, Any]:
    return {"type": "mlp", "input_dim": N_FEATURES, "hidden": [64], "classes": N_CLASSES,
            "input_scale": 16.0}


def build_model(arch: dict[str, Any]) -> torch.nn.Module:
    """An MLP from its arch config; inputs are divided by ``input_scale``, NaN inputs imputed by ``fill``."""
    import torch
    from torch import nn

    class MLP(nn.Module):
        fill: torch.Tensor   # a registered buffer (see below)

        def __init__(self, input_dim: int, hidden: list[int], classes: int, input_scale: float) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            d = input_dim
            for h in hidden:
                layers += [nn.Linear(d, h), nn.ReLU()]
                d = h
            layers.append(nn.Linear(d, classes))
            self.net: nn.Sequential = nn.Sequential(*layers)
            self.input_scale = input_scale
            # per-feature value used for missing (NaN) inputs: the training mean
            self.register_buffer("fill", torch.zeros(input_dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.where(torch.isnan(x), self.fill.expand_as(x), x)
            return self.net(x / self.input_scale)

    return MLP(int(arch["input_dim"]), list(arch["hidden"]), int(arch["classes"]),
               float(arch.get("input_scale", 1.0)))


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:1`` are taken as given."""
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def predict_logits(model: torch.nn.Module, x: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    import torch

    dev = device or next(model.parameters()).device
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev)).float().cpu().numpy()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    logits = predict_logits(model, x)
    finite = np.isfinite(logits).all(axis=1)
    pred = np.where(finite, logits.argmax(axis=1) if len(logits) else 0, -1)
    return float((pred == y).mean()) if len(y) else 0.0


def train_model(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 25, batch_size: int = 128,
                lr: float = 1e-2, arch: dict[str, Any] | None = None) -> torch.nn.Module:
    """Deterministic minibatch Adam training on CPU (seeded model init and batch order)."""
    import torch

    arch = arch or default_arch()
    threads = torch.get_num_threads()
    # one thread: a tiny MLP gains nothing from more, and spinning workers crawl on a busy machine
    torch.set_num_threads(1)
    try:
        return _train(x, y, seed, epochs, batch_size, lr, arch)
    finally:
        torch.set_num_threads(threads)


def _train(x: np.ndarray, y: np.ndarray, seed: int, epochs: int, batch_size: int, lr: float,
           arch: dict[str, Any]) -> torch.nn.Module:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = build_model(arch)
    model.get_buffer("fill").copy_(torch.as_tensor(x.mean(axis=0), dtype=torch.float32))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return model


def train_version(registry: ModelRegistry, version: str, seed: int = 0, shuffle_labels: bool = False,
                  epochs: int = 25, parent: str | None = None, notes: str = "",
                  mark_known_good: bool = False, make_current: bool = False) -> dict[str, Any]:
    """Train the digits MLP and publish it as ``version``; returns the stored metadata.

    ``shuffle_labels`` trains on permuted labels: a deliberately bad release (holdout accuracy ~0.1).
    The reference set stored with the version is its training inputs and its predictions on them.
    """
    started = time.perf_counter()
    split = load_digits_split()
    y = split.y_train
    if shuffle_labels:
        y = np.random.default_rng(seed + 1).permutation(y)
    arch = default_arch()
    model = train_model(split.x_train, y, seed=seed, epochs=epochs, arch=arch)
    ref_pred = predict_logits(model, split.x_train).argmax(axis=1).astype(np.int64)
    meta = {
        "arch": arch,
        "feature_names": list(split.feature_names),
        "holdout_accuracy": round(accuracy(model, split.x_holdout, split.y_holdout), 4),
        "train_accuracy": round(accuracy(model, split.x_train, split.y_train), 4),
        "parent": parent,
        "notes": notes or ("trained on shuffled labels (deliberately bad)" if shuffle_labels else ""),
        "seed": seed,
        "shuffle_labels": shuffle_labels,
        "dataset": "sklearn.datasets.load_digits",
    }
    state = {"state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "arch": arch}
    stored = registry.publish(version, state, meta, reference_inputs=split.x_train,
                              reference_predictions=ref_pred)
    if mark_known_good:
        registry.mark_known_good(version)
    if make_current:
        registry.switch(version)
    log.info("trained model version %s in %.1fs (holdout accuracy %.3f)", version,
             time.perf_counter() - started, meta["holdout_accuracy"],
             extra={"version": version, "holdout_accuracy": meta["holdout_accuracy"]})
    return stored


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | None = None) -> torch.nn.Module:
    """Build the module for a checkpoint dict loaded by ``ModelRegistry.load`` and move it to ``device``."""
    model = build_model(ckpt["arch"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    if device is not None:
        model.to(device)
    return model
