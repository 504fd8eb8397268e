"""A local model registry: a directory of checksummed versions, a known-good marker and an atomic pointer.

Layout (docs/contracts.md)::

    ROOT/versions/<version>/{model.pt, metadata.json, reference.npz}
    ROOT/current -> versions/<version>     (symlink, swapped with os.replace)
    ROOT/known_good                        (one version name, written atomically)

    >>> reg = ModelRegistry(Path("/tmp/registry"))
    >>> reg.publish("v1", state, metadata={"arch": {...}}, reference_inputs=x, reference_predictions=y)
    >>> reg.switch("v1").changed
    True
    >>> ckpt = reg.load("v1")          # verifies sha256, raises CorruptCheckpoint
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import IncidentdError
from detectors.types import Reference  # one Reference type for every layer

__all__ = [
    "CorruptCheckpoint",
    "InvalidModelFiles",
    "ModelRegistry",
    "Reference",
    "SwitchResult",
    "UnknownVersion",
    "VersionExists",
    "publish_files",
    "read_checkpoint",
    "read_reference",
]

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.npz"


class CorruptCheckpoint(IncidentdError):
    """A checkpoint whose checksum does not match or that cannot be read; names the path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"corrupt checkpoint {self.path}: {reason}")


class UnknownVersion(IncidentdError):
    """A version name that the registry does not hold."""

    def __init__(self, version: str, known: list[str] | None = None) -> None:
        self.version = version
        self.known = list(known or [])
        super().__init__(f"unknown model version {version!r}; known versions: {self.known}")


class VersionExists(IncidentdError):
    """Publishing a version name that is already taken (versions are immutable)."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(f"model version {version!r} already exists")


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """Outcome of ``ModelRegistry.switch``: ``changed`` is False when the version was already current."""

    previous: str | None
    current: str
    changed: bool
    message: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ModelRegistry:
    """A directory of immutable, checksummed model versions with an atomic ``current`` pointer.

        >>> reg = ModelRegistry(Path("registry"))
        >>> reg.versions(), reg.current(), reg.known_good()
        ([], None, None)
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.versions_dir = self.root / "versions"
        self.current_link = self.root / "current"
        self.known_good_file = self.root / "known_good"
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    # --- queries -------------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Published versions, oldest first (by creation time, then name)."""
        out = []
        for p in self.versions_dir.iterdir():
            if p.name.startswith(".") or not (p / METADATA_FILE).is_file():
                continue
            out.append(p.name)

        def key(v: str) -> tuple[float, str]:
            try:
                return (float(self.metadata(v).get("created", 0.0)), v)
            except (OSError, ValueError):
                return (0.0, v)

        return sorted(out, key=key)

    def exists(self, version: str) -> bool:
        return bool(_VERSION_RE.match(version)) and (self.versions_dir / version / METADATA_FILE).is_file()

    def _require(self, version: str) -> Path:
        if not self.exists(version):
            raise UnknownVersion(version, known=self.versions())
        return self.versions_dir / version

    def path(self, version: str) -> Path:
        """Absolute directory of a version."""
        return self._require(version)

    def metadata(self, version: str) -> dict[str, Any]:
        d = self.versions_dir / version
        if not _VERSION_RE.match(version) or not (d / METADATA_FILE).is_file():
            raise UnknownVersion(version, known=[p.name for p in self.versions_dir.iterdir()
                                                 if not p.name.startswith(".")])
        try:
            meta = json.loads((d / METADATA_FILE).read_text())
        except (OSError, ValueError) as e:
            raise CorruptCheckpoint(d / METADATA_FILE, f"unreadable metadata: {e}") from e
        if not isinstance(meta, dict):
            raise CorruptCheckpoint(d / METADATA_FILE, f"metadata is a {type(meta).__name__}, not an object")
        return meta

    def current(self) -> str | None:
        """The version the ``current`` symlink points to, or None."""
        if not self.current_link.is_symlink():
            return None
        target = Path(os.readlink(self.current_link))
        return target.name

    def known_good(self) -> str | None:
        try:
            v = self.known_good_file.read_text().strip()
        except FileNotFoundError:
            return None
        return v or None

    # --- mutations -----------------------------------------------------------------------------------
    def mark_known_good(self, version: str) -> None:
        """Record ``version`` as known-good (atomic write)."""
        self._require(version)
        _atomic_write_text(self.known_good_file, version + "\n")

    def publish(self, version: str, state: dict[str, Any], metadata: dict[str, Any] | None = None,
                reference_inputs: np.ndarray | None = None,
                reference_predictions: np.ndarray | None = None) -> dict[str, Any]:
        """Write a new immutable version: temp dir first, then one ``os.rename`` into ``versions/``.

        ``state`` is the checkpoint dict passed to ``torch.save`` (e.g. ``{"state_dict", "arch"}``).
        Returns the stored metadata (with ``sha256``).
        """
        import torch

        if not _VERSION_RE.match(version):
            raise ValueError(f"invalid version name {version!r}")
        final = self.versions_dir / version
        if final.exists():
            raise VersionExists(version)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=self.versions_dir))
        try:
            buf = io.BytesIO()
            torch.save(state, buf)
            (tmp / MODEL_FILE).write_bytes(buf.getvalue())
            meta = dict(metadata or {})
            meta.setdefault("parent", None)
            meta.setdefault("notes", "")
            meta["version"] = version
            meta.setdefault("created", time.time())
            meta["sha256"] = _sha256(tmp / MODEL_FILE)
            if reference_inputs is not None:
                x = np.asarray(reference_inputs, dtype=np.float32)
                y = (np.asarray(reference_predictions, dtype=np.int64) if reference_predictions is not None
                     else np.zeros(len(x), dtype=np.int64))
                np.savez(tmp / REFERENCE_FILE, inputs=x, predictions=y)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            for f in tmp.iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return meta

    def load(self, version: str) -> dict[str, Any]:
        """Read a version's checkpoint dict after verifying its sha256 against the metadata."""
        import torch

        d = self._require(version)
        meta = self.metadata(version)
        model = d / MODEL_FILE
        try:
            data = model.read_bytes()
        except OSError as e:
            raise CorruptCheckpoint(model, f"unreadable: {e.strerror or e}") from e
        digest = hashlib.sha256(data).hexdigest()
        expected = meta.get("sha256")
        if expected != digest:
            raise CorruptCheckpoint(model, f"sha256 mismatch (expected {expected}, got {digest})")
        try:
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types on a bad pickle; the boundary is here
            raise CorruptCheckpoint(model, f"cannot deserialize: {type(e).__name__}") from e
        if not isinstance(ckpt, dict):
            raise CorruptCheckpoint(model, "checkpoint is not a dict")
        return ckpt

    def verify(self, version: str) -> None:
        """Raise CorruptCheckpoint if the version's checksum does not match."""
        self.load(version)

    def switch(self, version: str) -> SwitchResult:
        """Point ``current`` at ``version``: new symlink under a temp name, then ``os.replace``. Idempotent."""
        self._require(version)
        previous = self.current()
        if previous == version:
            return SwitchResult(previous, version, False, f"{version} is already current; nothing to do")
        tmp = self.root / f".current.{os.getpid()}.{time.monotonic_ns()}"
        os.symlink(Path("versions") / version, tmp)
        try:
            os.replace(tmp, self.current_link)
        except BaseException:
            if tmp.is_symlink():
                tmp.unlink()
            raise
        return SwitchResult(previous, version, True, f"switched current from {previous} to {version}")

    def reference(self, version: str) -> Reference:
        d = self._require(version)
        f = d / REFERENCE_FILE
        try:
            with np.load(f) as z:
                return Reference(version, z["inputs"].astype(np.float32), z["predictions"].astype(np.int64))
        except FileNotFoundError:
            return Reference(version, np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
        except (OSError, ValueError, KeyError) as e:
            raise CorruptCheckpoint(f, f"unreadable reference: {e}") from e


# --- publishing a version from files (``incidentd registry add``) --------------------------------------
CHECKPOINT_KEYS = ("state_dict", "arch")


class InvalidModelFiles(IncidentdError):
    """A checkpoint or reference file offered for publishing is not in the documented format; names both."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file with torch (tensors only, no pickled code) and check its keys.

    The format (docs/model_server.md): a dict with ``state_dict`` (parameter name -> tensor) and
    ``arch`` (a dict describing the network, e.g. ``{"type": "mlp", "input_dim": 64, ...}``).
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidModelFiles(path, "no such file") from None
    except Exception as e:  # torch raises many types on a bad file; the boundary is here
        raise InvalidModelFiles(path, f"not a torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict):
        raise InvalidModelFiles(path, f"the checkpoint must be a dict, got {type(ckpt).__name__}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise InvalidModelFiles(path, f"missing key(s) {missing}; expected {list(CHECKPOINT_KEYS)}, "
                                      f"got {sorted(map(str, ckpt))}")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not state:
        raise InvalidModelFiles(path, "'state_dict' must be a non-empty dict of parameter name -> tensor")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise InvalidModelFiles(path, f"'state_dict' entries that are not tensors: {not_tensors[:5]}")
    nonfinite = [str(k) for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise InvalidModelFiles(path, f"non-finite values in {nonfinite[:5]}: refusing to publish damaged weights")
    if not isinstance(ckpt["arch"], dict):
        raise InvalidModelFiles(path, "'arch' must be a dict describing the network")
    return ckpt


def read_reference(path: Path, input_dim: int | None = None) -> Reference:
    """Load a reference file (``.npz``: ``inputs`` n x d, optional ``predictions`` n, ``feature_names`` d)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InvalidModelFiles(path, "no such file") from None
    except (OSError, ValueError) as e:
        raise InvalidModelFiles(path, f"not a NumPy .npz file of plain arrays ({e})") from e
    if "inputs" not in arrays:
        raise InvalidModelFiles(path, f"missing array 'inputs'; got {sorted(arrays)}")
    unknown = sorted(set(arrays) - {"inputs", "predictions", "feature_names"})
    if unknown:
        raise InvalidModelFiles(path, f"unknown array(s) {unknown}; expected inputs, predictions, feature_names")
    x = arrays["inputs"]
    if x.ndim != 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
        raise InvalidModelFiles(path, f"'inputs' must be a non-empty 2-D numeric array, got shape {x.shape} "
                                      f"of {x.dtype}")
    if np.isinf(x).any():
        raise InvalidModelFiles(path, "'inputs' contains infinite values (NaN marks a missing value)")
    if input_dim is not None and x.shape[1] != input_dim:
        raise InvalidModelFiles(path, f"'inputs' has {x.shape[1]} columns, the checkpoint's arch.input_dim "
                                      f"is {input_dim}")
    y = arrays.get("predictions", np.zeros(0, np.int64))
    if "predictions" in arrays and (y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer)):
        raise InvalidModelFiles(path, f"'predictions' must be {x.shape[0]} integers (one per input row), got "
                                      f"shape {y.shape} of {y.dtype}")
    names: tuple[str, ...] = ()
    if "feature_names" in arrays:
        raw = arrays["feature_names"]
        if raw.shape != (x.shape[1],) or raw.dtype.kind not in "US":
            raise InvalidModelFiles(path, f"'feature_names' must be {x.shape[1]} strings, got shape {raw.shape} "
                                          f"of {raw.dtype}")
        names = tuple(str(n) for n in raw)
    return Reference("", x.astype(np.float32), y.astype(np.int64), names)


def publish_files(registry: ModelRegistry | Path, version: str, checkpoint: Path, reference: Path | None = None, *,
                  known_good: bool = False, notes: str = "",
                  check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Validate a checkpoint file (and a reference file), then publish them as ``version``.

    Everything is checked before anything is written; the version appears with one rename (see
    :meth:`ModelRegistry.publish`), so a bad input leaves the registry as it was. ``check`` may refuse
    the checkpoint dict further (the model server passes "can I build this network?") by raising
    :class:`InvalidModelFiles`. Given a path, the registry directory is created only once the files pass.
    Returns the stored metadata.
    """
    if not _VERSION_RE.match(version):
        raise InvalidModelFiles(version, "invalid version name: letters, digits, '.', '_', '-' (max 64), "
                                         "starting with a letter or digit")
    if isinstance(registry, ModelRegistry) and registry.exists(version):
        raise VersionExists(version)
    ckpt = read_checkpoint(checkpoint)
    if check is not None:
        check(ckpt)
    input_dim = ckpt["arch"].get("input_dim")
    ref = read_reference(reference, int(input_dim) if isinstance(input_dim, int) else None) if reference else None
    if not isinstance(registry, ModelRegistry):
        registry = ModelRegistry(registry)
        if registry.exists(version):
            raise VersionExists(version)
    meta: dict[str, Any] = {"arch": ckpt["arch"], "notes": notes, "source": str(Path(checkpoint).resolve())}
    if ref is not None and ref.feature_names:
        meta["feature_names"] = list(ref.feature_names)
    stored = registry.publish(version, ckpt, meta,
                              reference_inputs=None if ref is None else ref.inputs,
                              reference_predictions=None if ref is None else ref.predictions)
    if known_good:
        registry.mark_known_good(version)
    return stored
