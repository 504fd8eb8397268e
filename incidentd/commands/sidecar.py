"""``incidentd sidecar``: watch a model server and expose its signals on /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("sidecar")(sidecar)


def sidecar(
    target: Annotated[
        str, typer.Option("--target", help="Base URL of the model server.")
    ] = "http://127.0.0.1:8081",
    host: Annotated[
        str, typer.Option("--host", help="Address the sidecar's /metrics listens on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the sidecar's /metrics and /healthz.")] = 9101,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between scrape cycles.")
    ] = 10.0,
    gpu: Annotated[
        str, typer.Option("--gpu", help="GPU source: auto (NVML if a GPU is found), nvml, simulated, none.")
    ] = "auto",
    gpu_sim_state: Annotated[
        Path | None,
        typer.Option(
            "--gpu-sim-state", help="JSON file holding the simulated GPU state (re-read on change)."
        ),
    ] = None,
    gpu_sim_count: Annotated[
        int, typer.Option("--gpu-sim-count", min=1, help="Number of simulated GPUs.")
    ] = 1,
    elasticsearch: Annotated[
        str | None, typer.Option("--elasticsearch", help="Ship events to this Elasticsearch URL.")
    ] = None,
    model_name: Annotated[
        str, typer.Option("--model-name", help="Model label until the server's model_info says.")
    ] = "model",
    window_rows: Annotated[
        int, typer.Option("--window-rows", min=10, help="Recent predictions kept.")
    ] = 2000,
    window_seconds: Annotated[
        float, typer.Option("--window-seconds", min=1.0, help="Maximum age of the window.")
    ] = 120.0,
    accuracy_window: Annotated[
        int, typer.Option("--accuracy-window", min=1, help="Last N labeled predictions.")
    ] = 500,
    drift_min_rows: Annotated[
        int, typer.Option("--drift-min-rows", min=10, help="Rows needed before drift is tested.")
    ] = 200,
    drift_alpha: Annotated[
        float,
        typer.Option(
            "--drift-alpha", min=1e-9, max=0.5, help="False-discovery level of the per-feature tests."
        ),
    ] = 0.01,
    drift_psi_threshold: Annotated[
        float, typer.Option("--drift-psi-threshold", min=0.0, help="PSI at or above which a feature drifts.")
    ] = 0.2,
    process_source: Annotated[
        str,
        typer.Option(
            "--process-source",
            help="Model-server process CPU/RSS from psutil on the pid in /healthz (auto) or only from the "
            "server's own process_* metrics (scrape; for another pid namespace, e.g. another container).",
        ),
    ] = "auto",
    disk_path: Annotated[
        list[str] | None,
        typer.Option("--disk-path", help="Export free space of the filesystem holding this path (where the "
                     "model server writes: its log or registry directory). Repeatable."),
    ] = None,
    es_spool_dir: Annotated[
        Path, typer.Option("--es-spool-dir", help="Disk spool for events not yet shipped to Elasticsearch.")
    ] = Path(".incidentd/es-spool"),
    es_index_prefix: Annotated[
        str, typer.Option("--es-index-prefix", help="Prefix of the Elasticsearch data streams and indices.")
    ] = "incidentd",
    log_level: Annotated[str, typer.Option("--log-level", help="Logging level.")] = "INFO",
    # ---- issue 13: third-party model servers (incidentd/commands/sidecar_servers.py) ----
    server_kind: Annotated[
        str,
        typer.Option(
            "--server-kind",
            help="ours (incidentd's own instrumentation), mlserver, triton, kserve, torchserve, bentoml, vllm, "
            "tgi, a kind from --metric-map, or auto (recognised from the server's /metrics).",
        ),
    ] = "ours",
    metrics_url: Annotated[
        str | None,
        typer.Option("--metrics-url", help="The server's Prometheus endpoint when not on --target's port."),
    ] = None,
    proxy_listen: Annotated[
        str | None,
        typer.Option("--proxy-listen", help="HOST:PORT of a transparent proxy recording inference payloads."),
    ] = None,
    upstream: Annotated[
        str | None, typer.Option("--upstream", help="Where the proxy forwards (default: --target).")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Directory of drift references: <model>/<version>|default.parquet|.csv."),
    ] = None,
    reference_file: Annotated[
        list[str] | None,
        typer.Option("--reference-file", help="MODEL=PATH: the drift reference of a model (Parquet/CSV); repeatable."),
    ] = None,
    metric_map: Annotated[
        list[Path] | None,
        typer.Option("--metric-map", help="Extra metric map (YAML file or directory); repeatable."),
    ] = None,
) -> None:
    """Scrape a model server every INTERVAL seconds; expose latency, errors, accuracy, drift, hardware."""
    import logging

    import uvicorn
    from prometheus_client import CollectorRegistry

    from collector.app import create_app
    from collector.gpu import GPUMode, GPUUnavailable, make_gpu_source
    from collector.sidecar import Sidecar, SidecarConfig
    from collector.sinks import EventSink, LogSink

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape request is noise
    try:
        mode = GPUMode(gpu)
    except ValueError:
        raise typer.BadParameter(f"--gpu must be one of {', '.join(m.value for m in GPUMode)}") from None
    if gpu_sim_state is not None and mode is not GPUMode.SIMULATED:
        raise typer.BadParameter("--gpu-sim-state needs --gpu simulated")
    if process_source not in ("auto", "scrape"):
        raise typer.BadParameter("--process-source must be auto or scrape")
    try:
        gpu_source = make_gpu_source(mode, sim_state=gpu_sim_state, sim_count=gpu_sim_count)
    except GPUUnavailable as exc:
        typer.echo(f"--gpu nvml: {exc}", err=True)
        raise typer.Exit(2) from None

    registry = CollectorRegistry()
    sink: EventSink
    if elasticsearch:
        from collector.elasticsearch import ElasticsearchSink

        sink = ElasticsearchSink(elasticsearch, es_index_prefix, spool_dir=es_spool_dir, registry=registry)
    else:
        sink = LogSink()
    config = SidecarConfig(
        model_name=model_name,
        window_rows=window_rows,
        window_seconds=window_seconds,
        accuracy_window=accuracy_window,
        drift_min_rows=drift_min_rows,
        drift_alpha=drift_alpha,
        drift_psi_threshold=drift_psi_threshold,
        process_source=process_source,
        disk_paths=tuple(disk_path or ()),
        # Not below 2 s however fast the cycle: a CPU-starved server answers /metrics slowly, and a
        # shorter timeout reads it as down (a crash) instead of contended.
        timeout_seconds=max(2.0, min(5.0, 2 * interval)),
    )
    # ---- issue 13: a third-party server is watched through its metric map, proxy and /feedback ----
    from incidentd.commands.sidecar_servers import resolve_kind, serve_server_sidecar

    kind = resolve_kind(server_kind, target, metrics_url, metric_map or [])
    if kind != "ours":
        serve_server_sidecar(
            kind=kind, target=target, metrics_url=metrics_url, proxy_listen=proxy_listen, upstream=upstream,
            reference=reference, reference_files=reference_file or [], metric_maps=metric_map or [],
            host=host, port=port, interval=interval,
            gpu_source=gpu_source, registry=registry, sink=sink, config=config, log_level=log_level,
        )
        return
    if proxy_listen or reference or reference_file:
        raise typer.BadParameter(
            "--proxy-listen, --reference and --reference-file are for third-party servers (--server-kind)"
        )
    # ---- end issue 13 ----
    sc = Sidecar(
        target,
        interval=interval,
        gpu_source=gpu_source,
        registry=registry,
        sink=sink,
        config=config,
    )
    uvicorn.run(create_app(sc), host=host, port=port, log_level=log_level.lower(), access_log=False)
