"""``incidentd rules check|test``: validate rule packs and run their unit tests (like ``promtool``)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    rules_app = typer.Typer(no_args_is_help=True, add_completion=False,
                            help="Validate rule packs and run rule unit tests.")
    rules_app.command("check")(check)
    rules_app.command("test")(test)
    app.add_typer(rules_app, name="rules")


def check(
    files: Annotated[list[Path], typer.Argument(help="Rule pack YAML files.", show_default=False)],
    with_default: Annotated[bool, typer.Option(
        "--with-default/--alone",
        help="Also check that the packs load together with the default pack, as the service does "
             "(rule names must be unique across packs).")] = False,
) -> None:
    """Validate rule packs: schema, vocabulary (signals, changes, context, actions) and templates.

    Prints one line per valid pack. An invalid pack prints the error (file, rule and field) and exits 1.
    """
    from collections import Counter

    from diagnosis.rules import DEFAULT_PACK, RuleEngine, RuleError, load_pack

    for path in files:
        try:
            pack = load_pack(path)
        except RuleError as exc:
            typer.echo(f"FAILED {exc}", err=True)
            raise typer.Exit(1) from None
        domains = Counter(r.then.domain.value for r in pack.rules)
        actions = Counter(r.then.action for r in pack.rules)
        causes = sorted({r.then.root_cause for r in pack.rules})
        typer.echo(f"OK {path}: pack {pack.pack!r}, {len(pack.rules)} rules "
                   f"({', '.join(f'{k} {v}' for k, v in sorted(domains.items()))}); "
                   f"{len(causes)} root causes; actions "
                   f"{', '.join(f'{k} {v}' for k, v in sorted(actions.items()))}")
    together = ([DEFAULT_PACK] if with_default else []) + list(files)
    if len(together) > 1:
        try:
            RuleEngine.load(list(dict.fromkeys(p.resolve() for p in together)))
        except RuleError as exc:
            typer.echo(f"FAILED {', '.join(str(p) for p in together)} together: {exc}", err=True)
            raise typer.Exit(1) from None


def test(
    files: Annotated[list[Path], typer.Argument(help="Rule test YAML files (format: docs/faults.md).",
                                                show_default=False)],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list passing tests.")] = False,
    require_coverage: Annotated[bool, typer.Option(
        "--require-coverage", help="Fail when a rule of the packs under test never fires in any test.")] = False,
) -> None:
    """Run rule unit tests: build evidence, evaluate the packs, compare the ranked hypotheses.

    Prints PASS/FAIL per test, with the expectation and the ranking the engine produced for a failure.

    Exits 1 when a test fails or a file (or a pack it names) is invalid. Format: docs/faults.md.
    """
    from diagnosis.rule_tests import format_report, run_test_file
    from diagnosis.rules import RuleError

    ok = True
    for path in files:
        try:
            report = run_test_file(path)
        except RuleError as exc:
            typer.echo(f"FAILED {exc}", err=True)
            ok = False
            continue
        typer.echo(format_report(report, verbose=verbose))
        if not report.passed or (require_coverage and report.uncovered):
            ok = False
    if not ok:
        raise typer.Exit(1)
