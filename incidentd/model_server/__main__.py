"""``python -m incidentd.model_server``: the same server as ``incidentd model-server``, without typer."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def run_server(registry: Path, host: str = "127.0.0.1", port: int = 8081, enable_fault_injection: bool = False,
               model_name: str = "digits", device: str = "auto", log_level: str = "info",
               admin_token_file: Path | None = None, insecure: bool = False) -> None:
    """Build the app, print its URL and run uvicorn until interrupted."""
    import sys

    import uvicorn

    from incidentd.model_server.app import ModelServerSettings, create_app
    from incidentd.model_server.auth import check_admin_bind, load_token

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token = load_token(admin_token_file)
    refused = check_admin_bind(host, token, insecure)
    if refused:
        print(f"error: {refused}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if not token:
        logging.getLogger(__name__).warning("the admin API (/admin/*) is open to anyone who can reach %s:%d%s",
                                            host, port, " (--insecure)" if insecure else "")
    settings = ModelServerSettings(registry_dir=registry, model_name=model_name,
                                   enable_fault_injection=enable_fault_injection, device=device,
                                   admin_token=token)
    app = create_app(settings)
    print(f"model server: http://{host}:{port} (model {model_name}, version {app.state.holder.version}, "
          f"registry {settings.registry_dir}, fault injection {'on' if enable_fault_injection else 'off'})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m incidentd.model_server", description=run_server.__doc__)
    p.add_argument("--registry", type=Path, default=Path("./registry"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--enable-fault-injection", action="store_true")
    p.add_argument("--model-name", default="digits")
    p.add_argument("--device", default="auto")
    p.add_argument("--log-level", default="info")
    p.add_argument("--admin-token-file", type=Path, default=None)
    p.add_argument("--insecure", action="store_true")
    a = p.parse_args(argv)
    run_server(a.registry, a.host, a.port, a.enable_fault_injection, a.model_name, a.device, a.log_level,
               a.admin_token_file, a.insecure)


if __name__ == "__main__":
    main()
