"""Draws docs/img/compound-incident.png: the synthetic stack of tests/incidentd/test_pipeline.py with a bad
release (v2) and then an input shift. Run from the repository root: python scripts/compound_incident_plot.py."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, ".")

from incidentd.plots import render_incident  # noqa: E402
from tests.incidentd.test_pipeline import Stack  # noqa: E402


class PlotStack(Stack):
    """The test stack, also exporting the accuracy gauge the plot draws (drift costs a fifth of it)."""

    def tick(self, seconds: int = 1) -> None:
        for _ in range(seconds):
            acc = self.accuracy * (0.8 if self.drifted else 1.0) + float(self.rng.normal(0, 0.01))
            self.metrics.ingest_text(f'model_accuracy_ratio{{model="digits",version="{self.version}"}} {acc}\n',
                                     at=self.t + 1)
            super().tick(1)


def main(out: Path = Path("docs/img/compound-incident.png")) -> None:
    s = PlotStack(Path(tempfile.mkdtemp()))
    s.tick(90)
    s.version, s.accuracy = "v2", 0.1
    s.labeled = s.correct = 0
    s.tick(20)
    s.drifted = 6
    s.tick(25)
    (inc,) = s.store.incidents()
    for t in s.store.timeline(inc.id):
        print(f"{t.at - inc.opened_at:5.1f}  {t.kind.value:<11} {t.message}")
    out.write_bytes(render_incident(inc, s.store, s.metrics, 1.0, pad=60.0))
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
