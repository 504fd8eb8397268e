"""Triton (through PyTriton) serving tiny_model with the model-repository API open to a known token, for
the executor tests. Run in the pytriton venv (Python 3.12):

    LD_LIBRARY_PATH=<python3.12>/lib python pytriton_control.py HTTP_PORT GRPC_PORT METRICS_PORT TOKEN

PyTriton restricts Triton's model-repository endpoints to a random ``triton-access-token`` by default;
here the token is given, so the executor can send it.
"""

from __future__ import annotations

import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
from tiny_model import predict


@batch
def infer(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"predict": predict(x).reshape(-1, 1)}


if __name__ == "__main__":
    http, grpc, metrics = (int(a) for a in sys.argv[1:4])
    config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                          metrics_port=metrics, allow_gpu_metrics=False)
    with Triton(config=config, security_config=TritonSecurityConfig(access_token=sys.argv[4])) as triton:
        triton.bind(
            model_name="tiny",
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float64, shape=(4,))],
            outputs=[Tensor(name="predict", dtype=np.int64, shape=(1,))],
            config=ModelConfig(max_batch_size=64),
        )
        triton.serve()
