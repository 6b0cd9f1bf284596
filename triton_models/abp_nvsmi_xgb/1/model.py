"""Triton python-backend model: ABP mining detection with the project's own scoring code.

Serves ``<version dir>/model`` written by ``serving.sync``; the committed version 1 has none and
answers every request with a NOT_SYNCED error. Runs secml.abp.features + XGBoost.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.repository import AbpScorer


class TritonPythonModel:
    """Score dynamically batched requests of raw nvidia-smi records."""

    def initialize(self, args: dict) -> None:
        """Load the version directory's booster (if any)."""
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.scorer = AbpScorer(version_dir)

    def execute(self, requests: list) -> list:
        """Concatenate every request's records, score them once, split the answers back."""
        records, sizes, errors = [], [], []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "RECORDS").as_numpy().reshape(-1)
            try:
                batch = [json.loads(r) for r in raw]
                errors.append(None)
            except (ValueError, UnicodeDecodeError) as exc:
                batch = []
                errors.append(f"RECORDS is not JSON: {exc}")
            records.extend(batch)
            sizes.append(len(batch))
        try:
            results = self.scorer.score_records(records) if records else []
            failure = None
        except Exception as exc:  # noqa: BLE001 - reported to the client as the model's error
            results, failure = [], str(exc)
        responses, start = [], 0
        for size, error in zip(sizes, errors, strict=True):
            if error or failure:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(error or failure))
                )
                continue
            part = results[start : start + size]
            start += size
            out = np.array([json.dumps(r).encode() for r in part], dtype=object).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", out)]))
        return responses
