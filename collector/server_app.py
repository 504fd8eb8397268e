"""The HTTP routes a third-party server's sidecar adds: POST /feedback and POST /cloudevents.

>>> app = create_app(sidecar)          # collector/app.py: /metrics, /healthz
>>> add_server_routes(app, sidecar)    # + /feedback, /cloudevents
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from collector.cloudevents import EventError
from collector.feedback import parse_feedback, to_labels
from collector.server_sidecar import ServerSidecar
from detectors.errors import InvalidInput


def add_server_routes(app: FastAPI, sidecar: ServerSidecar) -> None:
    @app.post("/feedback", status_code=202)
    async def feedback(request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw)
            labels = to_labels(parse_feedback(body), sidecar._clock())
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        except InvalidInput as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        accepted = sidecar.inbox.post(labels)
        return {"accepted": accepted, "dropped": len(labels) - accepted}

    @app.post("/cloudevents", status_code=202)
    async def cloudevents(request: Request) -> Any:
        body = await request.body()
        try:
            half = sidecar.cloudevents.receive(dict(request.headers), body)
        except EventError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return {"received": half.value}
