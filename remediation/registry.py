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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import IncidentdError

__all__ = [
    "CorruptCheckpoint",
    "ModelRegistry",
    "Reference",
    "SwitchResult",
    "UnknownVersion",
    "VersionExists",
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


@dataclass(frozen=True, slots=True)
class Reference:
    """Reference inputs (n x d float32) and predictions (n,) stored with a version, for drift tests."""

    version: str
    inputs: np.ndarray
    predictions: np.ndarray


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
