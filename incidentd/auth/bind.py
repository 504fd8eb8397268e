"""Secure defaults at start-up: where the service may listen, given the credentials it has."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False     # a host name other than localhost may resolve anywhere


@dataclass(frozen=True, slots=True)
class BindDecision:
    allowed: bool
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    error: str = ""


def check_bind(host: str, credentials: bool, insecure: bool, anonymous_scopes: tuple[str, ...] = ()) -> BindDecision:
    """May the service listen on ``host``? Without credentials only on loopback, unless ``insecure``.

        >>> check_bind("0.0.0.0", credentials=False, insecure=False).allowed
        False
    """
    warnings: list[str] = []
    notes: list[str] = []
    if insecure:
        warnings.append("--insecure: the service may listen beyond loopback without credentials; anyone who "
                        "can reach it gets the anonymous scopes (" + (",".join(anonymous_scopes) or "none") + ")")
    if anonymous_scopes:
        warnings.append(f"security.anonymous_scopes grants {','.join(anonymous_scopes)} to requests without "
                        "a credential; change events they send never trigger automatic actions")
    if credentials:
        return BindDecision(True, tuple(warnings), tuple(notes))
    if is_loopback(host):
        notes.append(f"no credentials configured: listening on loopback ({host}) only. Create a key with "
                     "`incidentd keys create --config FILE --name NAME --scopes read,respond,approve,ingest`")
        return BindDecision(True, tuple(warnings), tuple(notes))
    if insecure:
        warnings.append(f"no credentials configured and listening on {host}: only /healthz answers until a "
                        "key is created, except for the anonymous scopes")
        return BindDecision(True, tuple(warnings), tuple(notes))
    return BindDecision(False, tuple(warnings), tuple(notes),
                        error=f"refusing to listen on {host} with no credentials configured: create a key "
                              "(`incidentd keys create`), set webhook_token or security.oidc, listen on "
                              "127.0.0.1, or pass --insecure")
