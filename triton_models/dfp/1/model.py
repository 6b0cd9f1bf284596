"""Triton python-backend model: DFP scoring of Duo / Azure AD records, every user in one model.

Per-user autoencoders come from the files ``serving.sync`` writes under ``users/`` and live in
an LRU cache; a user without a production model of their own is scored by the generic model.
Runs secml.dfp.schema + secml.dfp.infer.score_events, the same code as the batch pipeline.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from secml.dfp.history import UserState
from secml.dfp.serve import DfpScorer
from secml.repository import read_index
from secml.settings import get_settings

WATCH_S = 2.0  # how often an idle instance looks for the first synced DFP model


def decode_states(tensor: object) -> dict[str, UserState]:
    """The users' history states sent in STATE (element 0), empty when absent."""
    if tensor is None:
        return {}
    first = tensor.as_numpy().reshape(-1)[0]
    text = first.decode() if isinstance(first, bytes) else str(first)
    if not text:
        return {}
    return {u: UserState.from_dict(d) for u, d in json.loads(text).items()}


class TritonPythonModel:
    """Score each request (one batch of records of one source) on its own."""

    def initialize(self, args: dict) -> None:
        """Point the scorer at this model's synced users directory; torch and the models load
        once a DFP model is synced (in the background), so an idle stub holds no torch."""
        s = get_settings()
        self.torch_threads = s.serving_torch_threads  # one per instance: instances = cores
        self.dfp_dir = Path(args["model_repository"])
        self.scorer = DfpScorer(
            self.dfp_dir, threshold=s.dfp_z_threshold, cache_size=s.dfp_model_cache_size
        )
        self._torch_lock = threading.Lock()
        self._torch_ready = False
        self._stop = threading.Event()
        if self._synced():
            self._warm()
        else:
            threading.Thread(target=self._watch, name="dfp-warm", daemon=True).start()

    def _synced(self) -> bool:
        """Whether a DFP model is synced (an index being written counts as not yet)."""
        try:
            return bool(read_index(self.dfp_dir))
        except (OSError, ValueError):
            return False

    def _ready_torch(self) -> None:
        """Import torch with this instance's thread count (once, before any torch work)."""
        with self._torch_lock:
            if not self._torch_ready:
                import torch

                torch.set_num_threads(self.torch_threads)
                self._torch_ready = True

    def _warm(self) -> None:
        """Import the scoring code and load the generic models now (not on a request)."""
        self._ready_torch()
        self.scorer.warm()

    def _watch(self) -> None:
        """Wait for the first synced DFP model, then warm up."""
        while not self._synced():
            if self._stop.wait(WATCH_S):
                return
        self._warm()

    def finalize(self) -> None:
        """Stop waiting for a synced model."""
        self._stop.set()

    def _one(self, request: object) -> object:
        """Answer one request."""
        raw = pb_utils.get_input_tensor_by_name(request, "RECORDS").as_numpy().reshape(-1)
        src = pb_utils.get_input_tensor_by_name(request, "SOURCE").as_numpy().reshape(-1)
        sources = {s.decode() if isinstance(s, bytes) else str(s) for s in src}
        if len(sources) != 1:
            raise ValueError(f"SOURCE must name one source per request, got {sorted(sources)}")
        records = [json.loads(r) for r in raw]
        states = decode_states(pb_utils.get_input_tensor_by_name(request, "STATE"))
        self._ready_torch()
        results = self.scorer.score_records(records, sources.pop(), states)
        out = np.array([json.dumps(r).encode() for r in results], dtype=object).reshape(-1, 1)
        state_out = np.array([b""] * len(records), dtype=object).reshape(-1, 1)
        state_out[0, 0] = json.dumps({u: s.to_dict() for u, s in states.items()}).encode()
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor("RESULT", out), pb_utils.Tensor("STATE_OUT", state_out)]
        )

    def execute(self, requests: list) -> list:
        """Answer every request; a failing request gets its own error."""
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # noqa: BLE001 - reported to the client as the model's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
