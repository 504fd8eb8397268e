"""``incidentd sidecar --server-kind KIND|auto``: the sidecar for MLServer, Triton, KServe, TorchServe, ...

Runs the sidecar's app (/metrics, /healthz, /feedback, /cloudevents) and, with ``--proxy-listen``, the
transparent proxy, in one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import typer

log = logging.getLogger("incidentd.sidecar")
DETECT_SECONDS = 30.0


def resolve_kind(kind: str, target: str, metrics_url: str | None, extra_maps: list[Path]) -> str:
    """``auto`` -> the kind recognised from the exposition (logged); other values are checked against maps."""
    from collector.adapters import MapError, choose_kind, load_maps, parse_families

    try:
        maps = load_maps(extra_maps)
    except MapError as exc:
        raise typer.BadParameter(str(exc)) from None
    if kind != "auto":
        if kind not in maps:
            raise typer.BadParameter(f"--server-kind {kind!r}: known kinds are auto, {', '.join(sorted(maps))}")
        return kind
    urls = [metrics_url] if metrics_url else _candidate_metrics_urls(target, maps)
    deadline = time.monotonic() + DETECT_SECONDS
    last = "no answer"
    while True:
        for url in urls:
            try:
                r = httpx.get(url, timeout=2.0)
            except httpx.HTTPError as exc:
                last = f"{url}: {type(exc).__name__}"
                continue
            if r.status_code != 200:
                last = f"{url}: HTTP {r.status_code}"
                continue
            try:
                det = choose_kind(parse_families(r.text), maps)
            except (MapError, ValueError) as exc:
                last = f"{url}: {exc}"
                continue
            msg = f"--server-kind auto: chose {det.kind} from {url} (matched {', '.join(det.matched)})"
            typer.echo(msg, err=True)
            log.info(msg)
            return det.kind
        if time.monotonic() > deadline:
            raise typer.BadParameter(f"--server-kind auto: could not recognise the server ({last}); pass --server-kind")
        time.sleep(1.0)


def _candidate_metrics_urls(target: str, maps: dict[str, Any]) -> list[str]:
    from collector.server_sidecar import default_metrics_url

    urls = [target.rstrip("/") + "/metrics"]
    for m in maps.values():
        u = default_metrics_url(target, m)
        if u not in urls:
            urls.append(u)
    return urls


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"--proxy-listen {value!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve_server_sidecar(
    *,
    kind: str,
    target: str,
    metrics_url: str | None,
    proxy_listen: str | None,
    upstream: str | None,
    reference: Path | None,
    reference_files: list[str],
    metric_maps: list[Path],
    host: str,
    port: int,
    interval: float,
    gpu_source: Any,
    registry: Any,
    sink: Any,
    config: Any,
    log_level: str,
) -> None:
    import uvicorn

    from collector.adapters import load_maps
    from collector.app import create_app
    from collector.proxy import Proxy
    from collector.server_app import add_server_routes
    from collector.server_sidecar import ServerOptions, ServerSidecar

    if reference is not None and not reference.is_dir():
        raise typer.BadParameter(f"--reference {reference}: not a directory")
    per_model: dict[str, Path] = {}
    for item in reference_files:
        model, sep, path = item.partition("=")
        if not sep or not model or not path:
            raise typer.BadParameter(f"--reference-file {item!r}: expected MODEL=PATH")
        if not Path(path).is_file():
            raise typer.BadParameter(f"--reference-file {item!r}: {path} is not a file")
        per_model[model] = Path(path)
    options = ServerOptions(
        kind=kind, maps=load_maps(metric_maps), metrics_url=metrics_url, reference_dir=reference,
        reference_per_model=per_model,
    )
    sc = ServerSidecar(
        target, interval=interval, gpu_source=gpu_source, registry=registry, sink=sink, config=config, server=options
    )
    log.info("watching %s server at %s (metrics %s)", kind, target, sc.metrics_url)
    app = create_app(sc)
    add_server_routes(app, sc)
    level = log_level.lower()
    servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=level, access_log=False))]
    if proxy_listen:
        phost, pport = _host_port(proxy_listen)
        proxy = Proxy(upstream or target, sc.capture)
        servers.append(
            uvicorn.Server(
                uvicorn.Config(proxy, host=phost, port=pport, log_level=level, access_log=False, lifespan="on")
            )
        )
        log.info("proxy on %s -> %s", proxy_listen, upstream or target)

    async def main() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(main())
