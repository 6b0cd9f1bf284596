"""Triton python-backend model: DFP scoring of Duo / Azure AD records, every user in one model.

Per-user autoencoders come from the files ``serving.sync`` writes under ``users/`` and live in
an LRU cache; a user without a production model of their own is scored by the generic model.
Typed tensors (contract in secml.dfp.serve and config.pbtxt): the gateway featurizes, this
model groups rows by the model that scores each user and runs one forward per group
(``DfpScorer.score_arrays``, the code the batch pipeline's ``AutoEncoder.score`` runs).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from secml.dfp import serve
from secml.dfp.serve import DfpScorer
from secml.repository import HOT_FILE, INDEX_FILE, USERS_DIR, read_index
from secml.settings import get_settings

log = logging.getLogger(__name__)
WATCH_S = 2.0  # how often the model looks for the first synced model, then for hot.json


class TritonPythonModel:
    """Score each request (one batch of one source's featurized rows) on its own."""

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
        self._warmed = False
        self._stop = threading.Event()
        if self._synced():
            self._warm()
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
        self._warmed = True

    def _watch(self) -> None:
        """Wait for the first synced DFP model, then warm up; then keep the models of the
        most recently active users loaded (``users/hot.json`` and the index, written by sync)."""
        while not self._synced():
            if self._stop.wait(WATCH_S):
                return
        if not self._warmed:
            self._warm()
        seen = None
        while not self._stop.is_set():
            files = [self.dfp_dir / USERS_DIR / f for f in (HOT_FILE, INDEX_FILE)]
            now = [f.stat().st_mtime_ns if f.is_file() else 0 for f in files]
            if now != seen:
                try:
                    loaded = self.scorer.preload()
                    seen = now
                    if loaded:
                        log.info("dfp: preloaded %d models of active users", len(loaded))
                except Exception as exc:  # noqa: BLE001 - a half-synced file: try again
                    log.warning("dfp: preloading active users' models failed: %s", exc)
            self._stop.wait(WATCH_S)

    def finalize(self) -> None:
        """Stop waiting for a synced model."""
        self._stop.set()

    def _one(self, request: object) -> object:
        """Answer one request (one source's featurized rows)."""

        def get(name: str) -> object:
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

        sources = {s.decode() if isinstance(s, bytes) else str(s) for s in get(serve.SOURCE).flat}
        if len(sources) != 1:
            raise ValueError(f"SOURCE must name one source per request, got {sorted(sources)}")
        users = [u.decode() if isinstance(u, bytes) else str(u) for u in get(serve.USER).flat]
        raw = get(serve.CATEGORICAL)
        cat = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in raw.flat])
        cat = cat.astype(object).reshape(len(users), -1)
        self._ready_torch()
        out = self.scorer.score_arrays(
            sources.pop(),
            users,
            cat,
            get(serve.NUMERIC).reshape(len(users), -1),
            get(serve.BINARY).reshape(len(users), -1),
            get(serve.RISK_INPUTS),
        )
        return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in out.items()])

    def execute(self, requests: list) -> list:
        """Answer every request; a failing request gets its own error."""
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # noqa: BLE001 - reported to the client as the model's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
