"""TorchServe handler serving tiny_model: KServe-v1-style JSON bodies on /predictions/tiny.

Each request's body is ``{"instances": [[...], ...]}``; the answer is ``{"predictions": [...]}``.
"""

from __future__ import annotations

import json

from tiny_model import predict


class TinyHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context) -> None:  # type: ignore[no-untyped-def]
        self.initialized = True

    def handle(self, data, context):  # type: ignore[no-untyped-def]
        out = []
        for row in data:
            body = row.get("body") or row.get("data")
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            out.append({"predictions": predict(body["instances"]).tolist()})
        return out


_service = TinyHandler()


def handle(data, context):  # type: ignore[no-untyped-def]
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
