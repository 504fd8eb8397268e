"""Draws docs/img/compound-incident.png: the synthetic stack of tests/incidentd/test_pipeline.py with a bad
release (v2) and then an input shift; run from the repository root: python scripts/compound_incident_plot.py."""
import sys, pathlib, tempfile
sys.path.insert(0, ".")
from tests.incidentd.test_pipeline import Stack
from incidentd.plots import render_incident
tmp = pathlib.Path(tempfile.mkdtemp())
s = Stack(tmp)
_tick = Stack.tick
def tick(self, seconds=1):
    for _ in range(seconds):
        acc = self.accuracy * (0.8 if self.drifted else 1.0) + float(self.rng.normal(0, 0.01))
        self.metrics.ingest_text(f'model_accuracy_ratio{{model="digits",version="{self.version}"}} {acc}\n', at=self.t + 1)
        _tick(self, 1)
Stack.tick = tick
s.tick(90)
s.version, s.accuracy = "v2", 0.1
s.labeled = s.correct = 0
s.tick(20)
s.drifted = 6
s.tick(25)
(inc,) = s.store.incidents()
for t in s.store.timeline(inc.id):
    print(round(t.at - inc.opened_at, 1), t.kind.value, t.message)
for h in inc.hypotheses:
    print(h.root_cause, h.confidence, h.recommended_action.value, h.explains, h.alternative_to, h.discounts)
png = render_incident(inc, s.store, s.metrics, 1.0, pad=60.0)
pathlib.Path("docs/img/compound-incident.png").write_bytes(png)
print(len(png))
