"""The fault bench on a third-party server: which faults apply, how they are expected to end, and a clear
refusal for the ones that do not apply (the bench itself on MLServer is run by hand; README figures)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from diagnosis.types import ActionKind
from incidentd.bench import NOT_ON_SERVER, applicable, taxonomy
from incidentd.cli import build_app
from incidentd.demo import SERVERS, _faults
from incidentd.injection import FAULTS


@pytest.mark.parametrize("server", ["mlserver", "torchserve"])
def test_every_fault_either_runs_on_the_server_or_says_why_not(server):
    runs = set(applicable(server))
    skipped = set(NOT_ON_SERVER[server])
    assert runs.isdisjoint(skipped)
    assert runs | skipped == set(applicable("ours"))
    assert skipped <= set(FAULTS)
    assert all(why.strip() for why in NOT_ON_SERVER[server].values())
    # the faults a user meets most: a bad deploy, drift, stalled labels, GPU health
    assert {"bad_version", "covariate_drift", "concept_drift", "label_stall", "gpu_thermal", "gpu_errors"} <= runs
    assert {f.name for f in taxonomy(server=server)} == runs      # each has an injector there


def test_mlserver_runs_the_faults_that_need_a_restart():
    assert {"cpu_contention", "memory_pressure", "memory_leak"} <= set(applicable("mlserver"))


@pytest.mark.parametrize("server", ["mlserver", "torchserve"])
def test_on_a_server_the_bench_expects_the_same_actions_as_on_ours(server):
    ours = {f.name: f for f in taxonomy()}
    for f in taxonomy(server=server):
        assert (f.expected_domain, f.expected_action, f.expected_root_cause) == (
            ours[f.name].expected_domain, ours[f.name].expected_action, ours[f.name].expected_root_cause)
        assert f.inject is not ours[f.name].inject       # through MLServer's traffic/hook, not /admin
    by_name = {f.name: f for f in taxonomy(server=server)}
    assert by_name["bad_version"].expected_action is ActionKind.ROLLBACK
    assert by_name["covariate_drift"].expected_action is None


@pytest.mark.parametrize("server", ["mlserver", "torchserve"])
def test_the_demo_on_a_server_runs_every_demo_fault_that_applies(server):
    ours = {f.name for f in _faults("ours")}
    on_server = {f.name for f in _faults(server)}
    assert on_server | set(SERVERS[server]) == ours and on_server.isdisjoint(SERVERS[server])


def test_a_fault_that_does_not_apply_is_refused_with_the_reason():
    r = CliRunner().invoke(build_app(), ["bench", "faults", "--server", "mlserver", "--fault", "crash"])
    assert r.exit_code == 2
    assert "crash does not apply on mlserver" in r.output and "process" in r.output


def test_an_unknown_server_is_refused():
    r = CliRunner().invoke(build_app(), ["bench", "faults", "--server", "bentoml"])
    assert r.exit_code == 2 and "ours, mlserver" in r.output
    r = CliRunner().invoke(build_app(), ["demo", "--server", "bentoml"])
    assert r.exit_code == 2 and "ours, mlserver" in r.output
