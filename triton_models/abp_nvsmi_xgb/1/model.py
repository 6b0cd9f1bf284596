"""Triton python-backend model: ABP mining detection on typed tensors (secml.abp.serve).

Serves ``<version dir>/model`` written by ``serving.sync``; the committed version 1 has none and
answers every request with a NOT_SYNCED error. Dynamically batched requests are scored in one
XGBoost call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from secml.abp.serve import INPUT, INPUT_GPU, AbpScorer
from secml.repository import ABP_REGISTERED, NotSyncedError, read_meta
from secml.settings import get_settings


def _uuids(request: object, n: int) -> list[str | None]:
    """The optional GPU uuids of a request (None per row when absent)."""
    tensor = pb_utils.get_input_tensor_by_name(request, INPUT_GPU)
    if tensor is None:
        return [None] * n
    raw = tensor.as_numpy().reshape(-1)
    # an empty uuid is a record without one: no history (not one shared "" GPU)
    return [(v.decode() if isinstance(v, bytes) else str(v)) or None for v in raw]


class TritonPythonModel:
    """Score dynamically batched requests of (n, 18) feature matrices."""

    def initialize(self, args: dict) -> None:
        """Load the version directory's booster (if any) with the configured thread count."""
        version_dir = Path(args["model_repository"]) / args["model_version"]
        # nothing synced (version 1): answer NOT_SYNCED without the scorer, whose imports
        # (xgboost, scipy) would hold ~75 MiB in an idle stub
        self.scorer = None
        if read_meta(version_dir) is not None:
            self.scorer = AbpScorer(version_dir, threads=get_settings().serving_xgb_threads)

    def execute(self, requests: list) -> list:
        """Concatenate every request's rows, score them once, split the answers back."""
        if self.scorer is None:
            error = pb_utils.TritonError(str(NotSyncedError(ABP_REGISTERED)))
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        mats = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        sizes = [len(m) for m in mats]
        uuids: list[str | None] | None = None
        if self.scorer.temporal:
            uuids = [u for r, n in zip(requests, sizes, strict=True) for u in _uuids(r, n)]
        try:
            x = mats[0] if len(mats) == 1 else np.concatenate(mats)
            out = self.scorer.outputs(x.astype(np.float32, copy=False), uuids)
        except Exception as exc:  # noqa: BLE001 - reported to the client as the model's error
            error = pb_utils.TritonError(str(exc))
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(k, v[start : start + n]) for k, v in out.items()]
            responses.append(pb_utils.InferenceResponse(tensors))
            start += n
        return responses
