"""tiny_model as a Triton Python-backend model (model.py of each version folder), for running tritonserver
itself with a model repository (the server binary PyTriton ships) in the executor tests."""

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

W = np.array([[1.0, -0.5, 0.2], [-0.3, 1.2, 0.1], [0.4, 0.3, -1.0], [0.0, -0.2, 1.1]])
B = np.array([0.1, 0.0, -0.1])


class TritonPythonModel:
    def execute(self, requests):  # type: ignore[no-untyped-def]
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            y = np.argmax(x @ W + B, axis=1).astype(np.int64).reshape(-1, 1)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("predict", y)]))
        return out
