"""Triton python-backend model: DFP scoring of Duo / Azure AD records, every user in one model.

Per-user autoencoders come from the files ``serving.sync`` writes under ``users/`` and live in
an LRU cache; a user without a production model of their own is scored by the generic model.
Runs secml.dfp.schema + secml.dfp.infer.score_events, the same code as the batch pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from secml.settings import get_settings
from serving.repository import DfpScorer


class TritonPythonModel:
    """Score each request (one batch of records of one source) on its own."""

    def initialize(self, args: dict) -> None:
        """Point the scorer at this model's synced users directory."""
        s = get_settings()
        self.scorer = DfpScorer(
            Path(args["model_repository"]),
            threshold=s.dfp_z_threshold,
            cache_size=s.dfp_model_cache_size,
        )
        self.scorer.warm()

    def _one(self, request: object) -> object:
        """Answer one request."""
        raw = pb_utils.get_input_tensor_by_name(request, "RECORDS").as_numpy().reshape(-1)
        src = pb_utils.get_input_tensor_by_name(request, "SOURCE").as_numpy().reshape(-1)
        sources = {s.decode() if isinstance(s, bytes) else str(s) for s in src}
        if len(sources) != 1:
            raise ValueError(f"SOURCE must name one source per request, got {sorted(sources)}")
        records = [json.loads(r) for r in raw]
        results = self.scorer.score_records(records, sources.pop())
        out = np.array([json.dumps(r).encode() for r in results], dtype=object).reshape(-1, 1)
        return pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", out)])

    def execute(self, requests: list) -> list:
        """Answer every request; a failing request gets its own error."""
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # noqa: BLE001 - reported to the client as the model's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
