"""Scoring of a compound bench run (incidentd bench faults --compound): a pair is right when both causes are
ranked, every action taken was verified on its own cause, and no harmful action was taken."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from incidentd.bench import COMPOUND_PAIRS, PairResult, compound_pairs, compound_summary, taxonomy
from incidentd.cli import build_app

EXPECTED = {"model.bad_version": "rollback", "data.covariate_drift": None}


def pair(ranked: list[str], actions: list[dict[str, str]]) -> PairResult:
    return PairResult(("bad_version", "covariate_drift"), ("model", "data"), dict(EXPECTED), ranked=ranked,
                      actions=actions)


def act(kind: str, cause: str, status: str) -> dict[str, str]:
    return {"kind": kind, "root_cause": cause, "status": status}


def test_a_pair_is_right_when_both_causes_are_ranked_and_the_rollback_verified() -> None:
    p = pair(["data.covariate_drift", "model.bad_version"], [act("rollback", "model.bad_version", "verified")])
    assert p.right and p.public()["harmful_actions"] == 0


@pytest.mark.parametrize(("ranked", "actions"), [
    (["model.bad_version"], [act("rollback", "model.bad_version", "verified")]),            # one cause missing
    (["data.covariate_drift", "model.bad_version"],
     [act("rollback", "model.bad_version", "not_recovered")]),                             # not verified
    (["data.covariate_drift", "model.bad_version"],
     [act("rollback", "model.bad_version", "verified"), act("restart", "data.covariate_drift", "verified")]),
    (["data.covariate_drift", "model.bad_version"], [act("rollback", "model.bad_version", "reverted")]),
])
def test_a_pair_is_wrong_otherwise(ranked: list[str], actions: list[dict[str, str]]) -> None:
    assert not pair(ranked, actions).right


def test_the_summary_counts_right_pairs_and_harmful_actions() -> None:
    good = pair(["data.covariate_drift", "model.bad_version"], [act("rollback", "model.bad_version", "verified")])
    bad = pair(["data.covariate_drift", "model.bad_version"], [act("clamp", "model.bad_version", "verified")])
    s = compound_summary([good, bad])
    assert (s["compound_accuracy"], s["compound_false_remediations"], len(s["compound"])) == (0.5, 1, 2)


def test_the_pairs_cover_every_pair_of_domains_twice_with_the_actions_of_the_default_pack() -> None:
    pairs = compound_pairs()
    domains = [tuple(sorted((a.expected_domain, b.expected_domain))) for a, b in pairs]
    assert sorted(domains) == sorted([("data", "model")] * 2 + [("hardware", "model")] * 2
                                     + [("data", "hardware")] * 2)
    assert len(pairs) == len(COMPOUND_PAIRS)
    actions = {f.name: f.expected_action for f in taxonomy(["bad_version", "covariate_drift"])}
    assert actions["bad_version"] == "rollback" and actions["covariate_drift"] is None


def test_a_pair_within_one_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="both faults are in the data domain"):
        compound_pairs([("covariate_drift", "unit_change")])


@pytest.mark.parametrize(("args", "says"), [
    (["--pair", "bad_version"], "expected FAULT+FAULT"),
    (["--pair", "bad_version+no_such_fault"], "unknown fault(s) ['no_such_fault']"),
    (["--pair", "covariate_drift+unit_change"], "both faults are in the data domain"),
])
def test_a_bad_pair_on_the_command_line_is_refused_with_what_is_wrong(args: list[str], says: str) -> None:
    r = CliRunner().invoke(build_app(), ["bench", "faults", "--compound", *args])
    assert r.exit_code == 2 and says in r.output


def test_a_pair_without_compound_is_refused() -> None:
    r = CliRunner().invoke(build_app(), ["bench", "faults", "--pair", "bad_version+cpu_contention"])
    assert r.exit_code == 2 and "--pair needs --compound" in r.output
