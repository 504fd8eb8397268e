"""Drift references from files, one per model version, and feature names from the server's metadata.

Layout of ``--reference DIR``: ``DIR/<model>/<version>.parquet`` (or ``.csv``), with ``DIR/<model>/default.*``
for versions without a file of their own; a path per model can also be given. A file's columns are the
model's input features, in order, named as in the server's metadata (``GET /v2/models/{m}``), or
``f0..fN`` when the server has none; an optional ``prediction`` column holds reference predictions.

    >>> files = ReferenceFiles(Path("refs"))
    >>> ref = files.load("tiny", "v1", feature_names=("x_0", "x_1", "x_2", "x_3"))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from collector.scrape import Reference
from detectors.errors import IncidentdError

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".csv")
PREDICTION_COLUMN = "prediction"


class ReferenceError(IncidentdError):
    """A reference file exists but cannot be used; the message names the file and what is wrong."""


class ReferenceFiles:
    def __init__(self, root: Path | None = None, per_model: Mapping[str, Path] | None = None) -> None:
        self.root = root
        self.per_model = dict(per_model or {})

    def find(self, model: str, version: str) -> Path | None:
        """The file for (model, version): its own, else the model's default, else the per-model path."""
        if self.root is not None:
            d = self.root / model
            for stem in ([version] if version else []) + ["default"]:
                for suffix in SUFFIXES:
                    p = d / f"{stem}{suffix}"
                    if p.is_file():
                        return p
        own = self.per_model.get(model)
        return own if own is not None and own.is_file() else None

    def load(self, model: str, version: str, feature_names: tuple[str, ...] | None = None) -> Reference | None:
        """None when no file exists; ReferenceError when one exists but does not fit."""
        path = self.find(model, version)
        if path is None:
            return None
        return read_reference(path, version, feature_names)


def read_reference(path: Path, version: str, feature_names: tuple[str, ...] | None = None) -> Reference:
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # boundary: pandas/pyarrow raise many types for a bad file
        raise ReferenceError(f"{path}: cannot read: {type(exc).__name__}: {exc}") from None
    preds = np.empty(0, dtype=int)
    if PREDICTION_COLUMN in df.columns and (feature_names is None or PREDICTION_COLUMN not in feature_names):
        p = pd.to_numeric(df.pop(PREDICTION_COLUMN), errors="coerce").to_numpy(dtype=float)
        preds = p[np.isfinite(p)].astype(int)
    columns = tuple(str(c) for c in df.columns)
    if feature_names is not None and columns != feature_names:
        raise ReferenceError(
            f"{path}: columns {list(columns)} are not the model's input features {list(feature_names)} "
            "(names and order from the server's metadata)"
        )
    try:
        x = df.apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise ReferenceError(f"{path}: a feature column is not numeric: {exc}") from None
    if x.ndim != 2 or x.shape[0] == 0:
        raise ReferenceError(f"{path}: no rows")
    return Reference(version=version, feature_names=columns, inputs=x, predictions=preds)


def feature_names_from_metadata(meta: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Feature names from an OIP model-metadata answer: one per input column, ``name`` or ``name_i``."""
    names: list[str] = []
    for t in meta.get("inputs") or []:
        if not isinstance(t, Mapping) or "name" not in t:
            return None
        shape = [int(s) for s in t.get("shape") or []]
        inner = shape[1:] if len(shape) > 1 else [1]
        if any(s < 0 for s in inner):
            return None
        width = math.prod(inner)
        names.extend([str(t["name"])] if width == 1 else [f"{t['name']}_{i}" for i in range(width)])
    return tuple(names) or None


def fetch_metadata(client: httpx.Client, base_url: str, model: str) -> dict[str, Any] | None:
    """``GET {base}/v2/models/{model}``; None when the server has no such endpoint or model."""
    try:
        r = client.get(f"{base_url.rstrip('/')}/v2/models/{model}")
    except httpx.HTTPError as exc:
        log.info("model metadata of %s unavailable: %s", model, exc)
        return None
    if r.status_code != 200:
        return None
    try:
        d = r.json()
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def default_names(width: int) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(width))
