"""Declarative rule packs (YAML) and the engine that scores hypotheses from evidence.

A rule is data over the vocabulary in ``diagnosis.vocabulary``:

    rules:
      - name: nonfinite-weights
        when: {all: [{fact: signal.nonfinite_outputs, op: active},
                     {fact: signal.weights_nonfinite, op: active}]}
        then: {domain: model, root_cause: model.nonfinite_weights, weight: 0.95, action: clamp,
               explanation: "Outputs of {context.model} turned non-finite ..."}

Every matching rule contributes its weight (plus any matched ``boosts``, times any matched
``discounts``) to its root cause; weights of one root cause combine as independent evidence,
1 - prod(1 - w). A discount is evidence from elsewhere that makes the cause less likely (input drift that
started before an accuracy drop lowers "the new version is bad"); it lowers a confidence, never removes a
hypothesis by itself, so several causes can be ranked at once. The output is a ranked list, never a first
match: every hypothesis at or above the pack's ``floor``, each with its own evidence, the symptoms it
explains, and the higher-ranked hypotheses it is an alternative to (those that rest on the same
symptoms); hypotheses with disjoint symptoms are simultaneous causes. Packs are validated at load time;
errors name the file, the rule and the field.
"""
from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from detectors.errors import IncidentdError
from diagnosis.types import ActionKind, FaultDomain, Hypothesis
from diagnosis.vocabulary import CHANGES, CONTEXT, SIGNALS

DEFAULT_PACK = Path(__file__).parent / "rules" / "default.yaml"


class RuleError(IncidentdError):
    """A rule pack is invalid; the message names the file, the rule and the field."""


# ---------------------------------------------------------------- schema

SIGNAL_OPS = {"active", "inactive"}
SIGNAL_NUMERIC_OPS = {"gt", "gte", "lt", "lte"}
ORDER_OPS = {"before", "after"}
CHANGE_OPS = {"within", "not_within"}
CONTEXT_OPS = {"eq", "ne", "is_true", "is_false"}
ALL_OPS = SIGNAL_OPS | SIGNAL_NUMERIC_OPS | ORDER_OPS | CHANGE_OPS | CONTEXT_OPS


class Fact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fact: str
    op: str
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> Fact:
        check_fact(self.fact, self.op, self.value)
        return self


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid")
    not_: Condition = Field(alias="not")


def _condition_kind(v: Any) -> str:
    if isinstance(v, dict):
        for key in ("all", "any", "not"):
            if key in v:
                return key
        return "fact"
    kinds: dict[type, str] = {All: "all", AnyOf: "any", Not: "not"}
    return kinds.get(type(v), "fact")


# Dispatch on the key so that an error names the field that is wrong, not every union branch.
Condition = Annotated[Annotated[Fact, Tag("fact")] | Annotated[All, Tag("all")] | Annotated[AnyOf, Tag("any")] | Annotated[Not, Tag("not")],
                      Discriminator(_condition_kind)]
All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


class Boost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: Condition
    weight: float = Field(gt=0, le=1)


class Discount(BaseModel):
    """Evidence that makes the rule's cause less likely: its weight is multiplied by ``factor``."""

    model_config = ConfigDict(extra="forbid")
    when: Condition
    factor: float = Field(gt=0, lt=1)
    reason: str = Field(min_length=1)


class Then(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domain: FaultDomain
    root_cause: str = Field(pattern=r"^(model|data|hardware)\.[a-z0-9_]+$")
    weight: float = Field(gt=0, le=1)
    action: ActionKind
    explanation: str
    # Symptoms this cause produces beyond those its condition needs (drift lowers accuracy): while active
    # they are explained by it, without being evidence for it.
    explains: list[str] = []

    @field_validator("explains")
    @classmethod
    def _known_signals(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown} in explains; known: {sorted(SIGNALS)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> Then:
        if not self.root_cause.startswith(self.domain.value + "."):
            raise ValueError(f"root_cause {self.root_cause!r} must start with its domain {self.domain.value!r}")
        check_template(self.explanation)
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    when: Condition
    boosts: list[Boost] = []
    discounts: list[Discount] = []
    then: Then


class RulePackModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pack: str
    # Hypotheses below this confidence are left out of the ranking (a discounted long shot is noise).
    floor: float = Field(default=0.0, ge=0, lt=1)
    rules: list[Rule] = Field(min_length=1)


def check_fact(fact: str, op: str, value: Any) -> None:
    root, _, rest = fact.partition(".")
    if op not in ALL_OPS:
        raise ValueError(f"unknown op {op!r}; known: {sorted(ALL_OPS)}")
    if root == "signal":
        name, _, attr = rest.partition(".")
        if name not in SIGNALS:
            raise ValueError(f"unknown signal {name!r} in fact {fact!r}; known: {sorted(SIGNALS)}")
        if attr in ("", ):
            if op in SIGNAL_OPS:
                return
            if op in ORDER_OPS:
                other = str(value or "")
                if not other.startswith("signal.") or other.removeprefix("signal.") not in SIGNALS:
                    raise ValueError(f"op {op!r} needs value 'signal.<name>', got {value!r}")
                return
            raise ValueError(f"op {op!r} does not apply to {fact!r} (use active, inactive, before, after)")
        if attr in ("score", "value"):
            if op not in SIGNAL_NUMERIC_OPS or not isinstance(value, (int, float)):
                raise ValueError(f"{fact!r} needs a numeric op {sorted(SIGNAL_NUMERIC_OPS)} and a number")
            return
        raise ValueError(f"unknown signal attribute {attr!r} in {fact!r} (score, value)")
    if root == "change":
        if rest not in CHANGES:
            raise ValueError(f"unknown change kind {rest!r}; known: {sorted(CHANGES)}")
        if op not in CHANGE_OPS or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{fact!r} needs op within/not_within and a positive number of seconds")
        return
    if root == "context":
        if rest not in CONTEXT:
            raise ValueError(f"unknown context key {rest!r}; known: {sorted(CONTEXT)}")
        if op not in CONTEXT_OPS:
            raise ValueError(f"op {op!r} does not apply to context facts ({sorted(CONTEXT_OPS)})")
        return
    if root == "alert":
        if not rest or op not in SIGNAL_OPS:
            raise ValueError(f"{fact!r}: alert facts are 'alert.<alertname>' with op active/inactive")
        return
    raise ValueError(f"unknown fact {fact!r}: facts start with signal., change., context. or alert.")


def check_template(template: str) -> None:
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is None:
            continue
        root, _, rest = field_name.partition(".")
        if root == "context" and rest in CONTEXT:
            continue
        if root == "signal":
            name, _, attr = rest.partition(".")
            if name in SIGNALS and attr in ("summary", "value", "score"):
                continue
        raise ValueError(f"unknown placeholder {{{field_name}}} in explanation "
                         "(use {context.<key>} or {signal.<name>.summary|value|score})")


# ---------------------------------------------------------------- facts and evaluation


@dataclass(frozen=True, slots=True)
class SignalFact:
    name: str
    onset: float
    score: float
    value: float
    summary: str
    evidence_id: str


@dataclass(frozen=True, slots=True)
class ChangeFact:
    kind: str
    at: float
    evidence_id: str


@dataclass(slots=True)
class Facts:
    """What the engine evaluates rules against: active signals, recent changes, firing alerts, context."""

    model: str
    signals: dict[str, SignalFact] = field(default_factory=dict)
    changes: list[ChangeFact] = field(default_factory=list)
    alerts: dict[str, str] = field(default_factory=dict)          # alertname -> evidence id
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def first_onset(self) -> float | None:
        return min((s.onset for s in self.signals.values()), default=None)


# Changes may be noticed a little after the first symptom (scrape and label delays).
CHANGE_SLACK_SECONDS = 15.0


class _Missing:
    def __getattr__(self, _: str) -> str:
        return "n/a"

    def __format__(self, spec: str) -> str:
        return "n/a"


class _Namespace:
    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getattr__(self, key: str) -> Any:
        v = self._values.get(key)
        return _Missing() if v is None else v


def _eval(cond: Any, facts: Facts, used: set[str], anchor: float | None) -> bool:
    if isinstance(cond, All):
        return all(_eval(c, facts, used, anchor) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(_eval(c, facts, used, anchor) for c in cond.any)
    if isinstance(cond, Not):
        return not _eval(cond.not_, facts, set(), anchor)
    return _eval_fact(cond, facts, used, anchor)


def _active_refs(cond: Any) -> set[str]:
    """Signals a condition requires to be active (not under a ``not``)."""
    if isinstance(cond, (All, AnyOf)):
        return set().union(*(_active_refs(c) for c in (cond.all if isinstance(cond, All) else cond.any)))
    if isinstance(cond, Fact) and cond.fact.startswith("signal.") and cond.op in ("active", "before", "after",
                                                                              "gt", "gte", "lt", "lte"):
        return {cond.fact.split(".")[1]}
    return set()


def _anchor(rule: Rule, facts: Facts) -> float | None:
    """Changes correlate with the onset of the symptoms the rule is about, not with unrelated noise."""
    onsets = [facts.signals[n].onset for n in _active_refs(rule.when) if n in facts.signals]
    return min(onsets) if onsets else facts.first_onset


def _eval_fact(f: Fact, facts: Facts, used: set[str], anchor: float | None) -> bool:
    root, _, rest = f.fact.partition(".")
    if root == "signal":
        name, _, attr = rest.partition(".")
        sig = facts.signals.get(name)
        if f.op == "inactive":
            return sig is None
        if sig is None:
            return False
        ok = True
        if f.op in ORDER_OPS:
            other = facts.signals.get(str(f.value).removeprefix("signal."))
            # A signal that never moved is "after" any that did.
            ok = (other is None or sig.onset < other.onset) if f.op == "before" else \
                 (other is not None and sig.onset > other.onset)
        elif attr:
            x = sig.score if attr == "score" else sig.value
            ok = {"gt": x > f.value, "gte": x >= f.value, "lt": x < f.value, "lte": x <= f.value}[f.op]
        if ok:
            used.add(sig.evidence_id)
        return ok
    if root == "change":
        hits = [c for c in facts.changes if c.kind == rest and anchor is not None
                and anchor - float(f.value) <= c.at <= anchor + CHANGE_SLACK_SECONDS]
        if f.op == "within":
            used.update(c.evidence_id for c in hits)
            return bool(hits)
        return not hits
    if root == "context":
        v = facts.context.get(rest)
        return bool({"eq": v == f.value, "ne": v != f.value, "is_true": v is True, "is_false": v is False}[f.op])
    if root == "alert":
        eid = facts.alerts.get(rest)
        if f.op == "inactive":
            return eid is None
        if eid is not None:
            used.add(eid)
        return eid is not None
    return False


@dataclass(frozen=True, slots=True)
class LoadedRule:
    pack: str
    source: str
    rule: Rule


def _leaves(cond: Any) -> int:
    """How many facts a condition names: the more, the more specific the rule."""
    if isinstance(cond, All):
        return sum(_leaves(c) for c in cond.all)
    if isinstance(cond, AnyOf):
        return max(_leaves(c) for c in cond.any)
    if isinstance(cond, Not):
        return _leaves(cond.not_)
    return 1


@dataclass(slots=True)
class _Cause:
    """What the matching rules of one root cause add up to while a ranking is built."""

    then: Then
    miss: float = 1.0
    best: tuple[float, int, str] | None = None     # (weight, specificity, -name order) of the leading rule
    rules: list[str] = field(default_factory=list)
    evidence: set[str] = field(default_factory=set)
    core: set[str] = field(default_factory=set)    # signal evidence the matching conditions rest on
    explains: set[str] = field(default_factory=set)   # signals its matching conditions and boosts used
    declared: set[str] = field(default_factory=set)   # active signals its rules say it produces
    affects: set[str] = field(default_factory=set)    # every signal its rules name or say it produces
    discounts: list[str] = field(default_factory=list)
    explanation: str = ""


def _leads(candidate: tuple[float, int, str], best: tuple[float, int, str] | None) -> bool:
    """Higher weight, then the more specific rule, then the rule name: never the order of the pack."""
    if best is None:
        return True
    (w1, s1, n1), (w2, s2, n2) = candidate, best
    return (w1, s1) > (w2, s2) or ((w1, s1) == (w2, s2) and n1 < n2)


class RuleEngine:
    """Scores hypotheses from facts with one or more validated rule packs.

        >>> engine = RuleEngine.load([DEFAULT_PACK])
        >>> engine.evaluate(facts)[0].root_cause
        'model.nonfinite_weights'
    """

    def __init__(self, rules: list[LoadedRule], floor: float = 0.0):
        names = [r.rule.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RuleError(f"rule names must be unique across packs; repeated: {dupes}")
        self.rules = rules
        self.floor = floor

    @classmethod
    def load(cls, paths: Sequence[Path | str]) -> RuleEngine:
        rules: list[LoadedRule] = []
        floor = 0.0
        for p in paths:
            pack = load_pack(p)
            rules.extend(LoadedRule(pack.pack, str(p), r) for r in pack.rules)
            floor = max(floor, pack.floor)
        return cls(rules, floor)

    def evaluate(self, facts: Facts) -> list[Hypothesis]:
        """Every hypothesis the facts support at or above the floor, ranked, related to each other."""
        by_evidence = {s.evidence_id: name for name, s in facts.signals.items()}
        by_cause: dict[str, _Cause] = {}
        for lr in self.rules:
            rule = lr.rule
            used: set[str] = set()
            anchor = _anchor(rule, facts)
            if not _eval(rule.when, facts, used, anchor):
                continue
            core = {e for e in used if e in by_evidence}
            weight = rule.then.weight
            for b in rule.boosts:
                if _eval(b.when, facts, used, anchor):
                    weight = min(0.99, weight + b.weight)
            entry = by_cause.setdefault(rule.then.root_cause, _Cause(rule.then))
            for d in rule.discounts:
                if _eval(d.when, facts, set(), anchor):
                    weight *= d.factor
                    entry.discounts.append(f"{rule.name}: {d.reason} (x{d.factor:g})")
            entry.miss *= (1.0 - weight)
            entry.rules.append(rule.name)
            entry.evidence.update(used)
            entry.core.update(core)
            entry.explains.update(by_evidence[e] for e in used if e in by_evidence)
            entry.declared.update(n for n in rule.then.explains if n in facts.signals)
            entry.affects.update(rule.then.explains)
            entry.affects.update(_active_refs(rule.when))
            rank = (weight, _leaves(rule.when), rule.name)
            if _leads(rank, entry.best):
                entry.best = rank
                entry.then = rule.then
                entry.explanation = render(rule.then.explanation, facts)
        ranked = sorted(((round(1.0 - e.miss, 4), cause, e) for cause, e in by_cause.items()),
                        key=lambda x: (-x[0], x[1]))
        hyps: list[Hypothesis] = []
        accounted: list[tuple[str, set[str]]] = []    # higher-ranked cause -> signal evidence it accounts for
        for confidence, cause, e in ranked:
            if confidence < self.floor:
                continue
            # An alternative rests only on symptoms a higher-ranked hypothesis already accounts for; a
            # hypothesis with a symptom of its own is a simultaneous cause.
            rivals = tuple(c for c, ev in accounted if e.core and e.core <= ev)
            accounted.append((cause, e.core | _accounted(e, facts)))
            hyps.append(Hypothesis(domain=e.then.domain, root_cause=cause, confidence=confidence,
                                   recommended_action=e.then.action, explanation=e.explanation,
                                   evidence_ids=tuple(sorted(e.evidence)), rules=tuple(e.rules),
                                   explains=tuple(sorted(e.explains | e.declared)), alternative_to=rivals,
                                   discounts=tuple(e.discounts),
                                   affects=tuple(sorted(e.affects | e.explains | e.declared))))
        return hyps


def _accounted(e: _Cause, facts: Facts) -> set[str]:
    """Evidence of the symptoms a cause accounts for: what it used, and what it produces that started with
    or after it (a cause cannot explain a symptom that was there before it)."""
    ev = {s.evidence_id: s for s in facts.signals.values()}
    onset = min((ev[i].onset for i in e.core if i in ev), default=None)
    used = {facts.signals[n].evidence_id for n in e.explains}
    later = {facts.signals[n].evidence_id for n in e.declared
             if onset is None or facts.signals[n].onset >= onset - CHANGE_SLACK_SECONDS}
    return used | later


def render(template: str, facts: Facts) -> str:
    signals = {name: _Namespace({"summary": s.summary, "value": round(s.value, 4), "score": round(s.score, 3)})
               for name, s in facts.signals.items()}
    ctx = {"model": facts.model, **facts.context}
    return template.format_map({"context": _Namespace(ctx), "signal": _Namespace(signals)})


def read_yaml_mapping(path: Path, what: str, keys: str, error: type[Exception]) -> dict[str, Any]:
    """A YAML file that must hold a mapping; ``error`` names the file and what is wrong with it."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise error(f"{path}: {what} not found") from e
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise error(f"{path}: a {what} is a mapping with keys {keys}")
    return raw


def load_pack(path: Path | str) -> RulePackModel:
    """Read and validate one YAML rule pack; raise RuleError naming file, rule and field."""
    path = Path(path)
    raw = read_yaml_mapping(path, "rule pack", "'pack' and 'rules'", RuleError)
    try:
        return RulePackModel.model_validate(raw)
    except ValidationError as e:
        raise RuleError(_describe(path, raw, e)) from None


def _yaml_path(loc: list[Any]) -> list[str]:
    """pydantic locations repeat the union tag (when.all.all.0.fact); keep the YAML keys only."""
    out: list[str] = []
    for x in loc:
        s = str(x)
        if out and s in ("fact", "all", "any", "not") and out[-1] == s:
            continue
        if s.startswith("function-after["):
            continue
        out.append(s)
    return out


def _describe(path: Path, raw: dict[str, Any], err: ValidationError) -> str:
    lines = []
    for item in err.errors()[:5]:
        loc = list(item["loc"])
        rule = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = raw.get("rules") or []
            name = rules[loc[1]].get("name") if loc[1] < len(rules) and isinstance(rules[loc[1]], dict) else None
            rule = f"rule {name!r}" if name else f"rule #{loc[1] + 1}"
            loc = loc[2:]
        # Drop pydantic's union-branch names so the field path reads like the YAML.
        field_path = ".".join(_yaml_path(loc))
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {rule + ': ' if rule else ''}field '{field_path or '<root>'}': {msg}")
    return "\n".join(dict.fromkeys(lines))
