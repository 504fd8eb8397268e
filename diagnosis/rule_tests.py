"""Unit tests for rule packs, in the spirit of ``promtool test rules``: given evidence, expect a ranking.

A test file is YAML::

    rule_files: [../default.yaml]          # relative to this file; omitted -> the default pack
    tests:
      - name: accuracy drop with input drift is data, not the deploy
        model: digits
        context: {running_version: v2, running_version_known_good: false}
        signals:
          - {name: input_drift, onset: 1000, summary: "12 features drift"}
          - {name: accuracy, onset: 1060, score: 0.99, value: 0.71}
        changes: [{kind: deploy, at: 900}]
        alerts: []                         # firing alertnames (facts alert.<name>)
        expect:                            # top-down: entry i is expected at rank i+1 unless 'rank' says
          - {root_cause: data.covariate_drift, domain: data, action: notify, min_confidence: 0.85}
        absent: [model.bad_version]        # root causes that must not be hypothesised at all

``run_test_file`` builds ``diagnosis.rules.Facts`` from each test, evaluates the rule engine and compares
the ranked hypotheses; it is pure (no I/O beyond reading the files) so the CLI and the tests share it.

    >>> report = run_test_file(Path("diagnosis/rules/tests/default_test.yaml"))
    >>> report.passed, sorted(report.uncovered)
    (True, [])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diagnosis.rules import (
    DEFAULT_PACK,
    ChangeFact,
    Facts,
    RuleEngine,
    RuleError,
    SignalFact,
    read_yaml_mapping,
)
from diagnosis.types import ActionKind, FaultDomain, Hypothesis
from diagnosis.vocabulary import ACTIONS, CHANGES, CONTEXT, SIGNALS


class RuleTestError(RuleError):
    """A rule test file is invalid; the message names the file, the test and the field."""


# ---------------------------------------------------------------- schema


class SignalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    onset: float = 1000.0
    score: float = Field(default=1.0, ge=0.0, le=1.0)
    value: float = 1.0
    summary: str = ""

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SIGNALS:
            raise ValueError(f"unknown signal {v!r}; known: {sorted(SIGNALS)}")
        return v


class ChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    at: float

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CHANGES:
            raise ValueError(f"unknown change kind {v!r}; known: {sorted(CHANGES)}")
        return v


class Expected(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root_cause: str = Field(pattern=r"^(model|data|hardware)\.[a-z0-9_]+$")
    domain: FaultDomain | None = None
    action: ActionKind | None = None
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    max_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    rank: Annotated[int, Field(ge=1)] | Literal["any"] | None = None
    rules: list[str] | None = None             # rules that must have contributed (any order, a subset)
    explanation_contains: str | None = None
    explains: list[str] | None = None          # symptoms it must account for (a subset of its explains)
    alternative_to: list[str] | None = None    # exactly these higher-ranked causes rest on its symptoms;
                                               # [] : a simultaneous cause of its own

    @field_validator("explains")
    @classmethod
    def _signals(cls, v: list[str] | None) -> list[str] | None:
        unknown = sorted(set(v or ()) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown} in explains; known: {sorted(SIGNALS)}")
        return v

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: object) -> object:
        if v is not None and v not in ACTIONS:
            raise ValueError(f"unknown action {v!r}; known: {sorted(k.value for k in ACTIONS)}")
        return v


class RuleTestCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    model: str = "digits"
    context: dict[str, Any] = Field(default_factory=dict)
    signals: list[SignalIn] = Field(default_factory=list)
    changes: list[ChangeIn] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list)
    expect: list[Expected]
    absent: list[str] = Field(default_factory=list)
    exact: bool = False                        # no hypotheses beyond those in expect

    @field_validator("context")
    @classmethod
    def _context(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(CONTEXT))
        if unknown:
            raise ValueError(f"unknown context key(s) {unknown}; known: {sorted(CONTEXT)}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> RuleTestCase:
        names = [s.name for s in self.signals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"signal(s) listed twice: {dupes}")
        return self


class RuleTestFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule_files: list[str] | None = None
    tests: list[RuleTestCase] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RuleTestFileModel:
        names = [t.name for t in self.tests]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"test names must be unique; repeated: {dupes}")
        return self


@dataclass(frozen=True, slots=True)
class RuleTestFile:
    path: Path
    rule_files: tuple[Path, ...]
    tests: tuple[RuleTestCase, ...]


def load_test_file(path: Path | str) -> RuleTestFile:
    """Read and validate a rule test file; rule_files resolve relative to it (default: the default pack)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "rule test file", "'rule_files' and 'tests'", RuleTestError)
    try:
        model = RuleTestFileModel.model_validate(raw)
    except ValidationError as e:
        raise RuleTestError(_describe(path, raw, e)) from None
    if model.rule_files is None:
        files: tuple[Path, ...] = (DEFAULT_PACK,)
    else:
        if not model.rule_files:
            raise RuleTestError(f"{path}: field 'rule_files': empty; omit it to test the default pack")
        files = tuple((path.parent / f).resolve() if not Path(f).is_absolute() else Path(f)
                      for f in model.rule_files)
    return RuleTestFile(path, files, tuple(model.tests))


def _describe(path: Path, raw: dict[str, Any], err: ValidationError) -> str:
    lines = []
    for item in err.errors()[:5]:
        loc = list(item["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "tests" and isinstance(loc[1], int):
            tests = raw.get("tests") or []
            t = tests[loc[1]] if loc[1] < len(tests) and isinstance(tests[loc[1]], dict) else {}
            where = f"test {t['name']!r}: " if t.get("name") else f"test #{loc[1] + 1}: "
            loc = loc[2:]
        # drop pydantic's union-branch names (int, literal['any'], constrained-int, function-after[...])
        skip = ("function-", "int", "literal", "constrained-")
        field_path = ".".join(str(x) for x in loc if not str(x).startswith(skip))
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {where}field '{field_path or '<root>'}': {msg}")
    return "\n".join(dict.fromkeys(lines))


# ---------------------------------------------------------------- running


def build_facts(case: RuleTestCase) -> Facts:
    """The Facts the engine sees for one test: evidence ids are deterministic (sig:<name>, chg:<i>:<kind>)."""
    facts = Facts(model=case.model, context=dict(case.context))
    for s in case.signals:
        facts.signals[s.name] = SignalFact(s.name, s.onset, s.score, s.value,
                                           s.summary or f"{s.name} (rule test)", f"sig:{s.name}")
    facts.changes.extend(ChangeFact(c.kind, c.at, f"chg:{i}:{c.kind}") for i, c in enumerate(case.changes))
    facts.alerts.update({a: f"alert:{a}" for a in case.alerts})
    return facts


@dataclass(frozen=True, slots=True)
class TestOutcome:
    name: str
    problems: tuple[str, ...]
    hypotheses: tuple[Hypothesis, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class RuleTestReport:
    path: Path
    rule_files: tuple[Path, ...]
    rules: tuple[str, ...]                         # every rule of the packs under test
    outcomes: tuple[TestOutcome, ...]
    fired: frozenset[str] = field(default_factory=frozenset)   # rules that matched in at least one test
    asserted: frozenset[str] = field(default_factory=frozenset)  # rules a test names in expect[].rules

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failed(self) -> list[TestOutcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def uncovered(self) -> list[str]:
        """Rules that no test made fire: their behaviour is untested."""
        return [r for r in self.rules if r not in self.fired]

    @property
    def unasserted(self) -> list[str]:
        """Rules that no test names in ``expect[].rules`` (they may still fire as a side effect)."""
        return [r for r in self.rules if r not in self.asserted]


def _fmt(h: Hypothesis) -> str:
    return (f"{h.root_cause} ({h.domain.value}, {h.recommended_action}, confidence {h.confidence:.3f}, "
            f"rules {', '.join(h.rules)})")


def _fmt_expected(e: Expected) -> str:
    bits = [e.root_cause]
    extra = [x for x in (e.domain.value if e.domain else None, e.action) if x]
    if e.min_confidence is not None:
        extra.append(f">= {e.min_confidence}")
    if e.max_confidence is not None:
        extra.append(f"<= {e.max_confidence}")
    if extra:
        bits.append(f"({', '.join(extra)})")
    return " ".join(bits)


def check_case(case: RuleTestCase, hyps: list[Hypothesis]) -> list[str]:
    """Compare a ranking with a test's expectations; return the problems (empty: the test passes)."""
    problems: list[str] = []
    by_cause = {h.root_cause: (i + 1, h) for i, h in enumerate(hyps)}
    if not case.expect and hyps:
        problems.append(f"expected no hypothesis, got {len(hyps)}")
    for pos, e in enumerate(case.expect):
        want_rank = pos + 1 if e.rank is None else e.rank
        found = by_cause.get(e.root_cause)
        if found is None:
            problems.append(f"missing: {_fmt_expected(e)} was not hypothesised")
            continue
        rank, h = found
        if want_rank != "any" and rank != want_rank:
            problems.append(f"rank: {e.root_cause} expected at rank {want_rank}, got rank {rank}")
        if e.domain is not None and h.domain is not e.domain:
            problems.append(f"domain: {e.root_cause} expected {e.domain.value}, got {h.domain.value}")
        if e.action is not None and h.recommended_action != e.action:
            problems.append(f"action: {e.root_cause} expected {e.action}, got {h.recommended_action}")
        if e.min_confidence is not None and not h.confidence >= e.min_confidence - 1e-9:
            problems.append(f"confidence: {e.root_cause} expected >= {e.min_confidence}, got {h.confidence}")
        if e.max_confidence is not None and not h.confidence <= e.max_confidence + 1e-9:
            problems.append(f"confidence: {e.root_cause} expected <= {e.max_confidence}, got {h.confidence}")
        if e.rules is not None:
            missing = [r for r in e.rules if r not in h.rules]
            if missing:
                problems.append(f"rules: {e.root_cause} expected rules {missing} to match, "
                                f"matched {list(h.rules)}")
        if e.explains is not None:
            unexplained = sorted(set(e.explains) - set(h.explains))
            if unexplained:
                problems.append(f"explains: {e.root_cause} expected to explain {unexplained}, "
                                f"explains {list(h.explains)}")
        if e.alternative_to is not None and sorted(e.alternative_to) != sorted(h.alternative_to):
            problems.append(f"alternative_to: {e.root_cause} expected {sorted(e.alternative_to) or 'none'} "
                            f"(a simultaneous cause when none), got {sorted(h.alternative_to) or 'none'}")
        if e.explanation_contains is not None and e.explanation_contains not in h.explanation:
            problems.append(f"explanation: {e.root_cause} does not contain {e.explanation_contains!r}: "
                            f"{h.explanation!r}")
    for cause in case.absent:
        if cause in by_cause:
            rank, h = by_cause[cause]
            problems.append(f"unexpected: {cause} at rank {rank} (confidence {h.confidence})")
    if case.exact and case.expect:
        wanted = {e.root_cause for e in case.expect}
        extra = [h.root_cause for h in hyps if h.root_cause not in wanted]
        if extra:
            problems.append(f"unexpected (exact): {extra}")
    for h in hyps:
        if not math.isfinite(h.confidence) or not 0.0 <= h.confidence <= 1.0:
            problems.append(f"confidence of {h.root_cause} out of [0, 1]: {h.confidence}")
    return problems


def run_tests(engine: RuleEngine, tests: list[RuleTestCase] | tuple[RuleTestCase, ...]
              ) -> tuple[list[TestOutcome], set[str]]:
    outcomes: list[TestOutcome] = []
    fired: set[str] = set()
    for case in tests:
        hyps = engine.evaluate(build_facts(case))
        for h in hyps:
            fired.update(h.rules)
        outcomes.append(TestOutcome(case.name, tuple(check_case(case, hyps)), tuple(hyps)))
    return outcomes, fired


def run_test_file(path: Path | str) -> RuleTestReport:
    """Load a test file and its rule packs, run every test; raises RuleTestError/RuleError when invalid."""
    tf = load_test_file(path)
    try:
        engine = RuleEngine.load(list(tf.rule_files))
    except RuleError as e:
        raise RuleTestError(f"{tf.path}: field 'rule_files': {e}") from None
    known = {r.rule.name for r in engine.rules}
    for case in tf.tests:
        for i, exp in enumerate(case.expect):
            unknown = sorted(set(exp.rules or ()) - known)
            if unknown:
                raise RuleTestError(f"{tf.path}: test {case.name!r}: field 'expect.{i}.rules': unknown rule(s) "
                                    f"{unknown}; the packs under test define {sorted(known)}")
    outcomes, fired = run_tests(engine, tf.tests)
    asserted = {r for case in tf.tests for exp in case.expect for r in (exp.rules or ())}
    return RuleTestReport(tf.path, tf.rule_files, tuple(r.rule.name for r in engine.rules), tuple(outcomes),
                          frozenset(fired), frozenset(asserted))


def format_outcome(o: TestOutcome) -> str:
    if o.passed:
        return f"  PASS  {o.name}"
    lines = [f"  FAIL  {o.name}"]
    lines += [f"        - {p}" for p in o.problems]
    lines.append("        got:" if o.hypotheses else "        got: no hypothesis")
    lines += [f"          {i}. {_fmt(h)}" for i, h in enumerate(o.hypotheses, 1)]
    return "\n".join(lines)


def format_report(report: RuleTestReport, verbose: bool = False) -> str:
    files = ", ".join(str(p) for p in report.rule_files)
    lines = [f"{report.path}: rule files {files}"]
    for o in report.outcomes:
        if verbose or not o.passed:
            lines.append(format_outcome(o))
    n_fail = len(report.failed)
    status = "FAILED" if n_fail else "SUCCESS"
    lines.append(f"{status}: {len(report.outcomes) - n_fail} passed, {n_fail} failed; "
                 f"{len(report.rules) - len(report.uncovered)} of {len(report.rules)} rules exercised")
    if report.uncovered:
        lines.append(f"  rules no test made fire: {', '.join(report.uncovered)}")
    return "\n".join(lines)
