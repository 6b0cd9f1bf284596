"""DFP scoring as served by Triton's ``dfp`` model: every user of every source in one model.

Per-user autoencoders come from the files ``serving.sync`` writes under ``users/`` (layout in
``secml.repository``) and live in an LRU cache; a user without a production model of their own
is scored by the generic model. Imported by the Triton model (numpy 1.26 environment) and by
tests and benchmarks in-process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from secml.repository import NotSyncedError, read_index, user_model_dir

TOP_FEATURES = 3


def _synced_registry_class() -> type:
    """Build the SyncedRegistry class lazily (imports torch only when DFP is served)."""
    from secml.dfp.model import AutoEncoder, find_model_dir
    from secml.dfp.registry import ModelRegistry

    class SyncedRegistry(ModelRegistry):
        """secml's DFP ModelRegistry reading the synced index and files instead of MLflow."""

        def __init__(self, dfp_dir: Path, source: str, **kw: Any) -> None:
            self.dfp_dir = Path(dfp_dir)
            super().__init__(source, tracking_uri="unused", loader=self._load_synced, **kw)

        def _fetch_listing(self) -> dict[str, str]:
            prefix = f"dfp-{self.source}-"
            return {k: v for k, v in read_index(self.dfp_dir).items() if k.startswith(prefix)}

        def _load_synced(self, name: str, version: str) -> AutoEncoder:
            d = user_model_dir(self.dfp_dir, name, version)
            return AutoEncoder.load(find_model_dir(d), device=self.device)

    return SyncedRegistry


class DfpScorer:
    """Scores DFP records of any source with the synced per-user models (LRU inside)."""

    def __init__(
        self,
        dfp_dir: Path,
        threshold: float = 2.0,
        cache_size: int = 256,
        ttl_s: float = 2.0,
        device: str = "auto",
    ) -> None:
        """Serve the models synced under ``dfp_dir``; refresh the index at most every ttl_s."""
        self.dfp_dir = Path(dfp_dir)
        self.threshold = threshold
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self.device = device
        self._registries: dict[str, Any] = {}
        self._lock = threading.Lock()

    def registry(self, source: str) -> Any:
        """The synced registry of ``source`` (created on first use)."""
        with self._lock:
            if source not in self._registries:
                cls = _synced_registry_class()
                self._registries[source] = cls(
                    self.dfp_dir,
                    source,
                    ttl_s=self.ttl_s,
                    cache_size=self.cache_size,
                    device=self.device,
                )
            return self._registries[source]

    def warm(self, sources: tuple[str, ...] = ("duo", "azure")) -> list[str]:
        """Import the scoring code and load each source's generic model now (not on a request)."""
        from secml.dfp import infer, schema  # noqa: F401 - imported for their import cost
        from secml.naming import GENERIC_USER, user_to_model_name

        loaded = []
        for source in sources:
            registry = self.registry(source)
            listing = registry.production_models(force=True)
            generic = user_to_model_name(source, GENERIC_USER)
            if generic in listing:
                registry.load(generic, listing[generic])
                loaded.append(f"{generic}:{listing[generic]}")
        return loaded

    def score_records(
        self,
        records: list[Mapping[str, Any]],
        source: str,
        states: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """One result per record, in input order.

        ``states`` maps user to ``secml.dfp.history.UserState``: what each user did before
        these records (empty when None); it is updated in place, so the caller can store it.
        """
        from secml.dfp.registry import NoModelError
        from secml.dfp.schema import process_records

        events = process_records(records, source, states)
        registry = self.registry(source)
        try:
            scored = score_dfp_events(events, source, registry)
        except NoModelError as exc:
            raise NotSyncedError(f"DFP {source} ({exc})") from exc
        return dfp_results(scored, source, self.threshold, len(records))


def score_dfp_events(events: pd.DataFrame, source: str, registry: Any) -> pd.DataFrame:
    """secml's own DFP scoring of processed events with ``registry``'s models."""
    from secml.dfp.infer import score_events

    return score_events(events, source, registry=registry)


def dfp_results(
    scored: pd.DataFrame, source: str, threshold: float, n: int
) -> list[dict[str, Any]]:
    """Per-record answers in the original record order (``_index``), top features included."""
    from secml.dfp.schema import FEATURES
    from secml.dfp.scoring import risk_details

    feats = FEATURES[source].all
    out: list[dict[str, Any] | None] = [None] * n
    for row in scored.to_dict("records"):
        zs = sorted(
            ((f, float(row[f"{f}_z_loss"])) for f in feats if f"{f}_z_loss" in row),
            key=lambda t: -t[1],
        )
        top = [
            {
                "feature": f,
                "z": _clean(z),
                "value": _plain(row.get(f)),
                "expected": _plain(row.get(f"{f}_pred")),
            }
            for f, z in zs[:TOP_FEATURES]
        ]
        name, _, version = str(row["model_version"]).rpartition(":")
        mean_z = float(row["mean_abs_z"])
        risk = float(row.get("risk", math.nan))
        has_risk = not math.isnan(risk)
        ts = row.get("timestamp")
        out[int(row["_index"])] = {
            "score": _clean(risk if has_risk else mean_z),
            "anomaly": bool(row["anomaly"]) if "anomaly" in row else bool(mean_z > threshold),
            "model": name,
            "version": version,
            "top_features": top,
            "details": {
                "mean_abs_z": _clean(mean_z),
                "max_abs_z": _clean(float(row["max_abs_z"])),
                "threshold": threshold,
                **risk_details(row),
            },
            "user": str(row["username"]),
            "event_time": None if ts is None else pd.Timestamp(ts).isoformat(),
        }
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"DFP scoring lost records {missing[:10]}")
    return out  # type: ignore[return-value]


def _clean(v: float) -> float:
    """Finite float for JSON (inf/NaN become a large sentinel / 0)."""
    if math.isnan(v):
        return 0.0
    if math.isinf(v):
        return 1e308 if v > 0 else -1e308
    return v


def _plain(v: Any) -> Any:
    """A JSON-ready scalar from numpy/pandas values."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return _clean(v)
    return v
