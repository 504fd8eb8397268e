"""Incidents and actions are mirrored when they change, and only then."""
from __future__ import annotations

from diagnosis.lifecycle import open_incident, resolve
from diagnosis.types import FaultDomain, Hypothesis
from incidentd.mirror import Mirror
from incidentd.store import Store


class Recorder:
    def __init__(self):
        self.incidents, self.actions = [], []

    def mirror_incident(self, doc):
        self.incidents.append(doc)

    def mirror_action(self, doc):
        self.actions.append(doc)

    def close(self):
        pass


def test_only_changed_documents_are_sent(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    sink = Recorder()
    mirror = Mirror(store, sink)
    h = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, "notify", "inputs drift")
    inc, entries = open_incident("digits", [h], ["ev-1"], 100.0, ["input_drift: 3 features"])
    store.save_incident(inc, entries)
    store.save_action({"id": "act-1", "incident_id": inc.id, "model": "digits", "kind": "rollback",
                       "status": "verifying", "created_at": 101.0, "audit": [{"at": 101.0, "event": "planned"}]})
    assert mirror.sync() == 2
    assert mirror.sync() == 0, "nothing changed, nothing sent"
    store.save_incident(inc, [resolve(inc, 200.0, "quiet")])
    assert mirror.sync() == 1
    last = sink.incidents[-1]
    assert last["status"] == "resolved" and last["timeline"][-1]["kind"] == "resolved"
    assert sink.actions[0]["updated_at"] == 101.0
    store.close()
