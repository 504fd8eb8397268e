"""Deploys and restarts are derived once (detectors.changes) and become evidence unless incidentd made them."""
from __future__ import annotations

from detectors.changes import RuntimeChange, RuntimeChangeKind, RuntimeObservation, merge, runtime_changes
from diagnosis.changes import change_evidence
from diagnosis.types import ChangeKind, Evidence, EvidenceKind


def test_changes_between_two_looks():
    a = RuntimeObservation("v1", "100")
    assert runtime_changes(a, RuntimeObservation("v1", "100")) == ()
    assert runtime_changes(a, RuntimeObservation("v2", "200")) == (
        RuntimeChange(RuntimeChangeKind.PROCESS, "100", "200"), RuntimeChange(RuntimeChangeKind.VERSION, "v1", "v2"))
    assert runtime_changes(a, RuntimeObservation(None, None)) == (), "not knowing is not a change"
    assert merge(a, RuntimeObservation(None, "300")) == RuntimeObservation("v1", "300")


def test_a_change_incidentd_made_is_not_recorded_twice():
    ours = [Evidence("chg-1", EvidenceKind.CHANGE, "digits", ChangeKind.RESTART.value, 100.0, "restart by incidentd",
                     attributes={"by": "incidentd", "new_pid": 200}),
            Evidence("chg-2", EvidenceKind.CHANGE, "digits", ChangeKind.ROLLBACK.value, 100.0, "rollback",
                     attributes={"by": "incidentd", "to": "v1"})]
    restart = RuntimeChange(RuntimeChangeKind.PROCESS, "100", "200")
    assert change_evidence("digits", restart, 105.0, ours) is None
    other = change_evidence("digits", restart, 105.0, ours[1:])
    assert other is not None and other.name == "restart" and other.attributes["by"] == "observed"
    assert change_evidence("digits", RuntimeChange(RuntimeChangeKind.VERSION, "v2", "v1"), 105.0, ours) is None
    deploy = change_evidence("digits", RuntimeChange(RuntimeChangeKind.VERSION, "v1", "v2"), 105.0, ours)
    assert deploy is not None and deploy.name == "deploy" and deploy.attributes["to"] == "v2"
    late = change_evidence("digits", restart, 100.0 + 600, ours)
    assert late is not None, "a restart long after ours is another restart"
