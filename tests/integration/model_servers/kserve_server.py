"""KServe Python ModelServer serving tiny_model on v1 (:predict) and v2 (/infer). Run in the kserve venv.

    python kserve_server.py --http_port 8080
"""

from __future__ import annotations

import argparse

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from tiny_model import predict


class Tiny(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload, headers=None, response_headers=None):  # type: ignore[no-untyped-def]
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy()
            y = predict(x)
            out = InferOutput(name="predict", shape=list(y.shape), datatype="INT64", data=np.asarray(y).tolist())
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)
        return {"predictions": predict(payload["instances"]).tolist()}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--http_port", type=int, required=True)
    p.add_argument("--grpc_port", type=int, required=True)
    a = p.parse_args()
    ModelServer(http_port=a.http_port, grpc_port=a.grpc_port, enable_grpc=False, workers=1).start([Tiny("tiny")])
