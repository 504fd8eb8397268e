"""One parameter model per fault kind, read by ``incidentd inject`` and the server: the same checks, the same
error text naming the field."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from incidentd.injection import FAULTS, InjectError, parse_params
from incidentd.model_server.app import ModelServerSettings, create_app
from incidentd.model_server.fault_params import (
    DEFAULT_DRIFT_FEATURES,
    PARAMS,
    CrashParams,
    FaultKind,
    FaultParamError,
    InputDriftParams,
    UnseenCategoriesParams,
    parse_fault_params,
)
from incidentd.model_server.faults import HANDLERS


def test_every_fault_kind_has_one_params_model_and_one_handler() -> None:
    assert set(PARAMS) == set(FaultKind) == set(HANDLERS)
    server_side = {spec.server_fault for spec in FAULTS.values() if spec.via == "server"}
    assert server_side <= set(FaultKind)
    for spec in FAULTS.values():
        if spec.server_fault is not None:
            assert spec.params is PARAMS[spec.server_fault]   # the CLI uses the server's model itself


def test_defaults_and_the_cli_string_forms() -> None:
    d = parse_fault_params(FaultKind.INPUT_DRIFT, {})
    assert isinstance(d, InputDriftParams) and d.features == list(DEFAULT_DRIFT_FEATURES)
    p = parse_fault_params(FaultKind.INPUT_DRIFT, {"features": "3, 4", "fraction": "0.25", "shift": "-2"})
    assert isinstance(p, InputDriftParams)
    assert (p.features, p.fraction, p.shift) == ([3, 4], 0.25, -2.0)
    u = parse_fault_params(FaultKind.UNSEEN_CATEGORIES, {"features": 7})
    assert isinstance(u, UnseenCategoriesParams) and u.features == [7]
    c = parse_fault_params(FaultKind.CRASH, {"exit_code": "0"})
    assert isinstance(c, CrashParams) and c.exit_code == 0


@pytest.mark.parametrize("kind, raw, field, reason", [
    (FaultKind.NULL_FEATURES, {"fraction": 2}, "fraction", "less than or equal to 1"),
    (FaultKind.NULL_FEATURES, {"fraction": True}, "fraction", "must be a number, not a boolean"),
    (FaultKind.LATENCY, {"seconds": "slow"}, "seconds", "valid number"),
    (FaultKind.LATENCY, {"seconds": float("nan")}, "seconds", "finite number"),
    (FaultKind.LATENCY, {"secs": 1}, "secs", "unknown parameter; known: seconds"),
    (FaultKind.INPUT_DRIFT, {"features": "1,x"}, "features", "valid integer"),
    (FaultKind.INPUT_DRIFT, {"features": []}, "features", "at least 1 item"),
    (FaultKind.UNSEEN_CATEGORIES, {"low": 5, "high": 2}, "high", "must be >= low (5), got 2"),
    (FaultKind.LABEL_STALL, {"mode": "later"}, "mode", "'hold' or 'drop'"),
    (FaultKind.NONFINITE_WEIGHTS, {"value": "zero"}, "value", "'nan', 'inf' or '-inf'"),
    (FaultKind.STARVATION, {"threads": 0}, "threads", "greater than or equal to 1"),
    (FaultKind.CRASH, {"exit_code": 256}, "exit_code", "less than or equal to 255"),
])
def test_bad_params_name_the_field(kind: FaultKind, raw: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(FaultParamError) as err:
        parse_fault_params(kind, raw)
    assert err.value.field == field and reason in str(err.value)
    assert str(err.value).startswith(f"parameter {field!r}: ")


@pytest.fixture()
def client(registry_dir: Path) -> Iterator[TestClient]:
    app = create_app(ModelServerSettings(registry_dir=registry_dir, enable_fault_injection=True, device="cpu"))
    with TestClient(app) as c:
        yield c


# (CLI fault name, CLI --param, server kind, the same value as JSON)
SAME_ERROR = [
    ("null_features", "fraction=2", FaultKind.NULL_FEATURES, {"fraction": 2}),
    ("latency", "seconds=slow", FaultKind.LATENCY, {"seconds": "slow"}),
    ("covariate_drift", "features=1,x", FaultKind.INPUT_DRIFT, {"features": [1, "x"]}),
    ("label_stall", "mode=later", FaultKind.LABEL_STALL, {"mode": "later"}),
    ("unseen_categories", "low=9", FaultKind.UNSEEN_CATEGORIES, {"low": 9, "high": 2}),
    ("unit_change", "facter=3", FaultKind.UNIT_CHANGE, {"facter": 3}),
    ("cpu_contention", "threads=65", FaultKind.STARVATION, {"threads": 65}),
]


@pytest.mark.parametrize("fault, pair, kind, body", SAME_ERROR)
def test_cli_and_server_give_the_same_error(client: TestClient, fault: str, pair: str, kind: FaultKind,
                                            body: dict[str, Any]) -> None:
    extra = ["high=2"] if fault == "unseen_categories" else []
    with pytest.raises(InjectError) as err:
        parse_params(FAULTS[fault], [pair, *extra])
    assert err.value.exit_code == 2
    r = client.post("/admin/faults", json={"fault": kind.value, "params": body})
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["msg"] == str(err.value)
    assert detail["loc"] == ["body", "params", str(err.value).split("'")[1]]
    assert client.get("/admin/faults").json()["active"] == {}


def test_checks_that_need_the_model_name_the_field_too(client: TestClient) -> None:
    """Feature indices, label shifts and tensor names are checked against the running model."""
    for kind, body, field in [(FaultKind.INPUT_DRIFT, {"features": [99]}, "features"),
                              (FaultKind.UNIT_CHANGE, {"feature": -1}, "feature"),
                              (FaultKind.CONCEPT_DRIFT, {"shift": 10}, "shift"),
                              (FaultKind.NONFINITE_WEIGHTS, {"tensor": "nope"}, "tensor"),
                              (FaultKind.NONFINITE_WEIGHTS, {"count": 10**9}, "count")]:
        r = client.post("/admin/faults", json={"fault": kind.value, "params": body})
        assert r.status_code == 422, (kind, r.text)
        (detail,) = r.json()["detail"]
        assert detail["loc"] == ["body", "params", field] and detail["msg"].startswith(f"parameter {field!r}: ")
    assert client.get("/admin/faults").json()["active"] == {}
