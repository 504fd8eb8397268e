"""Incidents and actions are mirrored when they change, and only then."""
from __future__ import annotations

from diagnosis.lifecycle import open_incident, resolve
from diagnosis.types import ActionKind, FaultDomain, Hypothesis
from incidentd.mirror import Mirror
from incidentd.store import Store
from remediation.types import ActionMode, ActionRecord, ActionStatus, AuditEvent


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
    h = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, ActionKind.NOTIFY, "inputs drift")
    inc, entries = open_incident("digits", [h], ["ev-1"], 100.0, ["input_drift: 3 features"])
    store.save_incident(inc, entries)
    store.save_action(ActionRecord("act-1", inc.id, "digits", ActionKind.ROLLBACK, ActionMode.AUTO,
                                   ActionStatus.VERIFYING, "test", f"{inc.id}:rollback", 101.0,
                                   audit=(AuditEvent(101.0, "planned"),)))
    assert mirror.sync() == 2
    assert mirror.sync() == 0, "nothing changed, nothing sent"
    inc, entry = resolve(inc, 200.0, "quiet")
    store.save_incident(inc, [entry])
    assert mirror.sync() == 1
    last = sink.incidents[-1]
    assert last["status"] == "resolved" and last["timeline"][-1]["kind"] == "resolved"
    assert sink.actions[0]["updated_at"] == 101.0
    store.close()


def test_documents_that_left_the_window_are_forgotten_and_sent_again_when_they_change(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    sink = Recorder()
    mirror = Mirror(store, sink, window=1)
    h = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, ActionKind.NOTIFY, "inputs drift")
    old, entries = open_incident("gone", [h], ["ev-1"], 100.0, [])
    store.save_incident(old, entries)
    assert mirror.sync() == 1
    new, entries = open_incident("digits", [h], ["ev-2"], 200.0, [])
    store.save_incident(new, entries)
    assert mirror.sync() == 1 and sink.incidents[-1]["id"] == new.id
    assert set(mirror._sent) == {new.id}, "the incident that left the window is no longer remembered"
    store.close()
