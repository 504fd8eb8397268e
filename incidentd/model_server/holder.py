"""The served model: the live module and its version, swapped atomically from the registry."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.instrumentation import WeightStats
from incidentd.model_server.model import model_from_checkpoint, train_version
from incidentd.model_server.settings import ModelServerSettings
from remediation.registry import CorruptCheckpoint, ModelRegistry, UnknownVersion

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

class ModelHolder:
    """The live model and its version; ``lock`` guards swaps and in-place weight edits."""

    def __init__(self, registry: ModelRegistry, device: torch.device) -> None:
        self.registry = registry
        self.device = device
        self.lock = threading.RLock()
        self.model: torch.nn.Module | None = None
        self.version: str = ""
        self.metadata: dict[str, Any] = {}

    def n_features(self) -> int:
        return int(self.metadata.get("arch", {}).get("input_dim", 64))

    def n_classes(self) -> int:
        return int(self.metadata.get("arch", {}).get("classes", 10))

    @property
    def scratch_dir(self) -> Path:
        """Where this server writes: its registry directory (the disk_fill fault fills this filesystem)."""
        return self.registry.root

    def install(self, version: str) -> dict[str, Any]:
        """Verify + build ``version`` off-lock, then swap the live model and the registry pointer."""
        ckpt = self.registry.load(version)           # raises UnknownVersion / CorruptCheckpoint
        meta = self.registry.metadata(version)
        model = model_from_checkpoint(ckpt, self.device)
        with self.lock:
            previous = self.version
            same = previous == version and self.model is not None and _same_weights(self.model, model)
            if same:
                return {"previous": previous, "current": version, "changed": False,
                        "message": f"{version} is already loaded with identical weights; nothing to do"}
            self.model, self.version, self.metadata = model, version, meta
            switch = self.registry.switch(version)
        msg = (f"reloaded {version} from its verified checkpoint (live weights differed)"
               if previous == version else switch.message)
        return {"previous": previous or None, "current": version, "changed": True, "message": msg}

    def weight_stats(self) -> WeightStats | None:
        import torch

        model = self.model
        if model is None:
            return None
        nonfinite, abs_max = 0, 0.0
        with torch.no_grad():
            for p in model.parameters():
                fin = torch.isfinite(p)
                nonfinite += int((~fin).sum())
                if fin.any():
                    abs_max = max(abs_max, float(p[fin].abs().max()))
        return WeightStats(nonfinite, abs_max)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def bootstrap(settings: ModelServerSettings, holder: ModelHolder) -> None:
    """Train v1 into an empty registry; then serve ``current``, falling back to known-good if corrupt."""
    reg = holder.registry
    if not reg.versions():
        log.info("empty registry %s: training %s", reg.root, settings.initial_version)
        train_version(reg, settings.initial_version, epochs=settings.train_epochs, mark_known_good=True,
                      make_current=True, notes="trained at first start")
    candidates = [v for v in (reg.current(), reg.known_good(), *reversed(reg.versions())) if v]
    for v in dict.fromkeys(candidates):
        try:
            holder.install(v)
        except (CorruptCheckpoint, UnknownVersion) as e:
            log.error("cannot serve version %s at start-up: %s", v, e)
            continue
        if reg.known_good() is None:
            reg.mark_known_good(v)
        return
    raise CorruptCheckpoint(reg.root, "no loadable model version in the registry")
