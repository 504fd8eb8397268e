"""``incidentd registry``: publish model versions into a registry and list what it holds.

    incidentd registry add --version v3 model.pt --reference reference.npz --registry ./registry
    incidentd registry list --registry ./registry

The checkpoint and reference formats are in docs/model_server.md ("Publishing a version").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from remediation.registry import InvalidModelFiles, ModelRegistry, VersionExists, publish_files

registry_app = typer.Typer(no_args_is_help=True, help="Publish model versions into a registry; list them.")


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


def check_builds(ckpt: dict[str, Any]) -> None:
    """The model server must be able to build the network: its arch keys and the state_dict's must fit."""
    from incidentd.model_server.model import build_model

    arch = ckpt["arch"]
    missing = [k for k in ("input_dim", "hidden", "classes") if k not in arch]
    if missing:
        raise InvalidModelFiles("checkpoint", f"'arch' lacks {missing}; the model server's MLP needs "
                                              "input_dim, hidden, classes (input_scale optional)")
    try:
        model = build_model(arch)
    except (TypeError, ValueError) as e:
        raise InvalidModelFiles("checkpoint", f"'arch' does not describe a buildable MLP: {e}") from e
    expected, got = set(model.state_dict()), set(ckpt["state_dict"])
    if expected != got:
        raise InvalidModelFiles("checkpoint", f"'state_dict' does not fit 'arch': missing {sorted(expected - got)}, "
                                              f"unexpected {sorted(got - expected)}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:   # shape mismatches
        first = str(e).strip().splitlines()[-1].strip()
        raise InvalidModelFiles("checkpoint", f"'state_dict' does not fit 'arch': {first}") from e


@registry_app.command("add")
def add(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (torch.save of {'state_dict', 'arch'}).",
                                               show_default=False)],
    version: Annotated[str, typer.Option("--version", help="Name of the new version (immutable).",
                                         show_default=False)],
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="Reference set for drift tests (.npz: inputs, predictions, feature_names).")] = None,
    registry: Annotated[Path, typer.Option("--registry", help="Model registry directory.")] = Path("./registry"),
    known_good: Annotated[bool, typer.Option("--known-good", help="Also mark the version known-good.")] = False,
    notes: Annotated[str, typer.Option("--notes", help="Free text stored in the metadata.")] = "",
) -> None:
    """Validate a checkpoint (and a reference file) and publish them as a new registry version.

    Nothing is written unless every check passes; the version appears at once (one rename).
    It does not become current: 'incidentd inject bad_version' or POST /admin/load deploys it.

    Exit 2: a bad checkpoint, reference or version name (named), or the version exists.
    """
    try:
        meta = publish_files(registry, version, checkpoint, reference, known_good=known_good,
                             notes=notes, check=_check_named(checkpoint))
    except (InvalidModelFiles, VersionExists) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"version": version, "registry": str(registry.expanduser().resolve()),
                           "known_good": known_good, "sha256": meta["sha256"],
                           "reference": str(reference) if reference else None}, sort_keys=True))


def _check_named(checkpoint: Path) -> Any:
    def check(ckpt: dict[str, Any]) -> None:
        try:
            check_builds(ckpt)
        except InvalidModelFiles as e:
            raise InvalidModelFiles(checkpoint, e.reason) from None
    return check


@registry_app.command("list")
def list_versions(
    registry: Annotated[Path, typer.Option("--registry", help="Model registry directory.")] = Path("./registry"),
) -> None:
    """Print the registry's versions, current and known-good as one JSON object."""
    reg = ModelRegistry(registry)
    typer.echo(json.dumps({"current": reg.current(), "known_good": reg.known_good(), "versions": reg.versions()},
                          sort_keys=True))
