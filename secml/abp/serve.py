"""The production ABP booster as served by Triton's ``abp_nvsmi_xgb`` model (typed contract).

Contract: ``FEATURES`` FP32 ``[-1, 18]`` (``secml.abp.features``, computed by the caller with the
one featurizer) and optionally ``GPU`` BYTES ``[-1, 1]`` (uuids, for boosters that read a
GPU's history: temporal features, the allocation latch) in; ``SCORE`` FP32 ``[-1, 1]``
(P(mining)), ``THRESHOLD`` FP32 and ``VERSION`` INT64 (the registered model version) per row
out. Dynamic batching merges requests.
Imported by the Triton model (numpy 1.26 environment), by tests and benchmarks in-process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from secml.repository import ABP_REGISTERED, META_FILE, MODEL_SUBDIR, NotSyncedError, read_meta

log = logging.getLogger(__name__)

INPUT = "FEATURES"
INPUT_GPU = "GPU"
OUTPUT_SCORE = "SCORE"
OUTPUT_THRESHOLD = "THRESHOLD"
OUTPUT_VERSION = "VERSION"


class AbpScorer:
    """The production ABP booster of one Triton version directory (secml.abp.model scoring)."""

    def __init__(self, version_dir: Path, threshold: float = 0.5, threads: int = 1) -> None:
        """Load ``<version_dir>/model`` (or stay in NOT_SYNCED state when there is none)."""
        from secml.abp.temporal import TemporalState

        self.meta = read_meta(version_dir)
        self.threshold = threshold
        self.booster = None
        # per-GPU history for temporal boosters, kept for the life of this model instance
        self.state = TemporalState()
        self.temporal = False
        if self.meta is not None:
            from secml.abp.model import booster_latch, booster_temporal

            self.booster = load_booster(version_dir / MODEL_SUBDIR)
            self.booster.set_param({"nthread": threads})
            attr = self.booster.attr("threshold")
            self.threshold = float(self.meta.get("threshold") or attr or threshold)
            # per-GPU history is read for temporal features and for the allocation latch
            self.temporal = bool(booster_temporal(self.booster)) or booster_latch(self.booster)

    @property
    def model_version(self) -> tuple[str, str]:
        """(registered model, version) served."""
        if self.meta is None:
            raise NotSyncedError(ABP_REGISTERED)
        return str(self.meta["registered_model"]), str(self.meta["version"])

    def score_matrix(self, x: np.ndarray, uuids: list[str | None] | None = None) -> np.ndarray:
        """P(mining) for an (n, 18) feature matrix (rows keyed by GPU uuid for history)."""
        from secml.abp.model import score

        if self.booster is None:
            raise NotSyncedError(ABP_REGISTERED)
        return score(self.booster, x, uuids if self.temporal else None, self.state)

    def outputs(
        self, x: np.ndarray, uuids: list[str | None] | None = None
    ) -> dict[str, np.ndarray]:
        """The contract's output tensors for a feature matrix."""
        _, version = self.model_version
        p = self.score_matrix(x, uuids).reshape(-1, 1)
        return {
            OUTPUT_SCORE: p.astype(np.float32),
            OUTPUT_THRESHOLD: np.full_like(p, self.threshold, dtype=np.float32),
            OUTPUT_VERSION: np.full(p.shape, int(version), dtype=np.int64),
        }


def load_booster(path: Path) -> Any:
    """Load the XGBoost booster of a synced model directory (MLflow xgboost flavor or a file)."""
    from secml.abp.model import load_booster as abp_load

    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.suffix in (".ubj", ".xgb", ".bst"))
        files += sorted(
            p for p in path.rglob("model*.json") if p.name not in (META_FILE, "metadata.json")
        )
    errors = []
    for f in files:
        try:
            booster = abp_load(str(f))
        except Exception as exc:  # noqa: BLE001 - try the next candidate file
            errors.append(f"{f.name}: {exc}")
            continue
        _maybe_cuda(booster)
        return booster
    raise FileNotFoundError(f"no loadable XGBoost model file under {path} ({errors})")


def _maybe_cuda(booster: Any) -> None:
    """Predict on CUDA when a GPU is present (NGC image), else stay on CPU."""
    try:
        from secml.abp.model import device

        if device() == "cuda":
            booster.set_param({"device": "cuda"})
    except Exception as exc:  # noqa: BLE001 - CPU builds of xgboost refuse cuda: stay on CPU
        log.info("ABP model stays on CPU: %s", exc)
