"""Properties of rule semantics, over generated rule packs and facts (hypothesis).

- Weights combine as independent evidence: a root cause's confidence is 1 - prod(1 - w) over its matching
  rules, so it lies between the largest weight and the sum of the weights, and adding a rule never lowers
  any root cause's confidence (nor removes a root cause).
- An inactive signal never raises a hypothesis: a rule whose condition needs a signal active never fires
  when that signal is absent, and taking a signal away never raises a confidence under conditions that
  only ask for signals to be active.
- Evaluation is deterministic and independent of the order of the rules and of the facts.

Packs go through the public path (YAML file -> ``RuleEngine.load``), as users write them. Weights are
multiples of 1/64 so that the products are exact and the order of multiplication cannot change a rounding.
"""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnosis.rules import ChangeFact, Facts, RuleEngine, SignalFact
from diagnosis.types import Hypothesis

SIGNALS = ["latency", "error_rate", "accuracy", "input_drift", "process_cpu", "label_stall"]
# one action and domain per root cause, as a coherent pack has; several rules may share a cause
CAUSES = {"model.bad_version": ("model", "rollback"), "model.nonfinite_weights": ("model", "clamp"),
          "data.input_drift": ("data", "notify"), "hardware.cpu_contention": ("hardware", "restart")}
WEIGHTS = st.integers(1, 63).map(lambda k: k / 64)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_DIR = Path(tempfile.mkdtemp(prefix="rule-props-"))
_counter = itertools.count()


# ---------------------------------------------------------------- strategies

def _signal_leaf(name: str, op: str, draw_value: Any = None) -> dict[str, Any]:
    if op in ("gt", "lt"):
        return {"fact": f"signal.{name}.value", "op": op, "value": draw_value}
    if op in ("before", "after"):
        return {"fact": f"signal.{name}", "op": op, "value": f"signal.{draw_value}"}
    return {"fact": f"signal.{name}", "op": op}


def needs_active(signal: str) -> st.SearchStrategy[dict[str, Any]]:
    """A leaf that can only hold while ``signal`` is active."""
    return st.one_of(
        st.just(_signal_leaf(signal, "active")),
        st.builds(lambda op, v: _signal_leaf(signal, op, v), st.sampled_from(["gt", "lt"]), st.integers(0, 10)),
        st.builds(lambda v: _signal_leaf(signal, "after", v), st.sampled_from(SIGNALS)),
    )


def monotone_leaf() -> st.SearchStrategy[dict[str, Any]]:
    """Leaves that ask only for signals to be active (or for context), never for one to be absent."""
    return st.one_of(
        st.sampled_from(SIGNALS).flatmap(needs_active),
        st.sampled_from([{"fact": "context.running_version_known_good", "op": "is_true"},
                         {"fact": "context.running_version_known_good", "op": "is_false"}]),
    )


def any_leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        monotone_leaf(),
        st.sampled_from(SIGNALS).map(lambda s: _signal_leaf(s, "inactive")),
        st.builds(lambda a, b: _signal_leaf(a, "before", b), st.sampled_from(SIGNALS), st.sampled_from(SIGNALS)),
        st.builds(lambda op, secs: {"fact": "change.deploy", "op": op, "value": secs},
                  st.sampled_from(["within", "not_within"]), st.sampled_from([60, 600])),
    )


def conditions(leaf: st.SearchStrategy[dict[str, Any]], with_not: bool) -> st.SearchStrategy[dict[str, Any]]:
    def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        options: list[st.SearchStrategy[dict[str, Any]]] = [st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"all": cs}),
                   st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"any": cs})]
        if with_not:
            options.append(inner.map(lambda c: {"not": c}))
        return st.one_of(*options)

    return st.recursive(leaf, extend, max_leaves=5)


@st.composite
def rules(draw: st.DrawFn, when: st.SearchStrategy[dict[str, Any]] | None = None,
          boosts: bool = True) -> dict[str, Any]:
    cause = draw(st.sampled_from(sorted(CAUSES)))
    domain, action = CAUSES[cause]
    rule: dict[str, Any] = {
        "name": f"r{next(_counter)}",
        "when": draw(when if when is not None else conditions(any_leaf(), with_not=True)),
        "then": {"domain": domain, "root_cause": cause, "weight": draw(WEIGHTS), "action": action,
                 "explanation": f"{cause} on {{context.model}}"},
    }
    if boosts:
        rule["boosts"] = draw(st.lists(st.builds(lambda c, w: {"when": c, "weight": w},
                                                 conditions(any_leaf(), with_not=False), WEIGHTS), max_size=2))
    return rule


@st.composite
def facts(draw: st.DrawFn) -> Facts:
    names = draw(st.lists(st.sampled_from(SIGNALS), unique=True, max_size=len(SIGNALS)))
    signals = {n: SignalFact(n, float(draw(st.integers(0, 300))), 1.0, float(draw(st.integers(0, 10))),
                             f"{n} moved", f"ev-{n}") for n in names}
    changes = [ChangeFact("deploy", float(at), f"chg-{i}")
               for i, at in enumerate(draw(st.lists(st.integers(-400, 400), max_size=2)))]
    return Facts(model="digits", signals=signals, changes=changes,
                 context={"running_version": "v1", "running_version_known_good": draw(st.booleans())})


# ---------------------------------------------------------------- helpers

def engine(rule_list: list[dict[str, Any]]) -> RuleEngine:
    path = _DIR / f"pack-{next(_counter)}.yaml"
    path.write_text(yaml.safe_dump({"pack": "props", "rules": rule_list}, sort_keys=False))
    return RuleEngine.load([path])


def confidences(hyps: list[Hypothesis]) -> dict[str, float]:
    return {h.root_cause: h.confidence for h in hyps}


def fired(hyps: list[Hypothesis]) -> set[str]:
    return {r for h in hyps for r in h.rules}


def canonical(hyps: list[Hypothesis]) -> list[tuple[Any, ...]]:
    return [(h.root_cause, h.confidence, h.domain, h.recommended_action, h.evidence_ids, tuple(sorted(h.rules)))
            for h in hyps]


def without(f: Facts, name: str) -> Facts:
    return Facts(model=f.model, signals={k: v for k, v in f.signals.items() if k != name},
                 changes=list(f.changes), alerts=dict(f.alerts), context=dict(f.context))


# ---------------------------------------------------------------- weights combine monotonically

@PROPS
@given(st.lists(rules(), min_size=1, max_size=6), rules(), facts())
def test_adding_a_rule_never_lowers_a_confidence(pack: list[dict[str, Any]], extra: dict[str, Any],
                                                 f: Facts) -> None:
    before = confidences(engine(pack).evaluate(f))
    after = confidences(engine([*pack, extra]).evaluate(f))
    assert set(before) <= set(after)
    for cause, conf in before.items():
        assert after[cause] >= conf, (cause, conf, after[cause])


@PROPS
@given(st.lists(st.tuples(st.sampled_from(SIGNALS), st.sampled_from(sorted(CAUSES)), WEIGHTS),
                min_size=1, max_size=8),
       facts())
def test_confidence_is_one_minus_the_product_of_the_matching_weights(
        spec: list[tuple[str, str, float]], f: Facts) -> None:
    pack = [{"name": f"r{i}", "when": {"all": [_signal_leaf(sig, "active")]},
             "then": {"domain": CAUSES[cause][0], "root_cause": cause, "weight": w, "action": CAUSES[cause][1],
                      "explanation": "x"}}
            for i, (sig, cause, w) in enumerate(spec)]
    got = confidences(engine(pack).evaluate(f))
    matching: dict[str, list[float]] = {}
    for sig, cause, w in spec:
        if sig in f.signals:
            matching.setdefault(cause, []).append(w)
    assert set(got) == set(matching)
    for cause, ws in matching.items():
        miss = 1.0
        for w in ws:
            miss *= 1.0 - w
        tol = 6e-5                      # confidences are reported to 4 decimals (half a unit, and float slack)
        assert got[cause] == pytest.approx(1.0 - miss, abs=tol)
        assert max(ws) - tol <= got[cause] <= min(1.0, sum(ws)) + tol


# ---------------------------------------------------------------- an inactive signal never raises a hypothesis

@PROPS
@given(st.sampled_from(SIGNALS).flatmap(
    lambda s: st.tuples(st.just(s), rules(when=st.tuples(needs_active(s), conditions(any_leaf(), with_not=True))
                                          .map(lambda pair: {"all": list(pair)})))),
       st.lists(rules(), max_size=4), facts())
def test_a_rule_that_needs_a_signal_active_never_fires_without_it(
        needed: tuple[str, dict[str, Any]], others: list[dict[str, Any]], f: Facts) -> None:
    signal, rule = needed
    absent = without(f, signal)
    hyps = engine([rule, *others]).evaluate(absent)
    assert rule["name"] not in fired(hyps)
    assert not engine([rule]).evaluate(absent), "a lone rule whose signal is inactive raised a hypothesis"


@PROPS
@given(st.lists(rules(when=conditions(monotone_leaf(), with_not=False), boosts=False), min_size=1, max_size=6),
       facts(), st.sampled_from(SIGNALS))
def test_taking_a_signal_away_never_raises_a_confidence(pack: list[dict[str, Any]], f: Facts, gone: str) -> None:
    eng = engine(pack)
    with_it = confidences(eng.evaluate(f))
    without_it = confidences(eng.evaluate(without(f, gone)))
    assert set(without_it) <= set(with_it)
    for cause, conf in without_it.items():
        assert conf <= with_it[cause]


# ---------------------------------------------------------------- determinism and order independence

@PROPS
@given(st.lists(rules(), min_size=1, max_size=6).flatmap(lambda p: st.tuples(st.just(p), st.permutations(p))),
       facts(), st.randoms(use_true_random=False))
def test_evaluation_does_not_depend_on_the_order_of_rules_or_facts(
        packs: tuple[list[dict[str, Any]], list[dict[str, Any]]], f: Facts, rnd: Any) -> None:
    pack, shuffled = packs
    names = list(f.signals)
    rnd.shuffle(names)
    reordered = Facts(model=f.model, signals={n: f.signals[n] for n in names}, changes=list(reversed(f.changes)),
                      alerts=dict(f.alerts), context=dict(reversed(list(f.context.items()))))
    eng = engine(pack)
    first = eng.evaluate(f)
    assert canonical(eng.evaluate(f)) == canonical(first), "the same facts gave another answer"
    assert canonical(engine(shuffled).evaluate(reordered)) == canonical(first)


def test_a_tie_between_rules_of_one_root_cause_does_not_depend_on_their_order() -> None:
    def rule(name: str, action: str) -> dict[str, Any]:
        return {"name": name, "when": {"all": [_signal_leaf("latency", "active")]},
                "then": {"domain": "hardware", "root_cause": "hardware.cpu_contention", "weight": 0.5,
                         "action": action, "explanation": f"rule {name}"}}

    f = Facts(model="digits", signals={"latency": SignalFact("latency", 1.0, 1.0, 1.0, "slow", "ev-latency")})
    a, b = rule("a", "restart"), rule("b", "notify")
    first, second = engine([a, b]).evaluate(f)[0], engine([b, a]).evaluate(f)[0]
    assert (first.recommended_action, first.explanation) == (second.recommended_action, second.explanation)
