"""Triton python-backend identity model: OUTPUT = INPUT (needs no trained model)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Echo each request's INPUT tensor back as OUTPUT."""

    def execute(self, requests: list) -> list:
        """Answer every request in the (dynamically batched) list."""
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x)]))
        return responses
