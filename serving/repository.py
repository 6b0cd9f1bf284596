"""Layout of the Triton model repository and the scoring that runs inside its models.

Imported by the Triton python-backend models (``triton_models/*/1/model.py``, numpy 1.26 /
pandas 2.2 environment), by ``serving.sync`` (which writes the layout) and by the tests and
benchmarks (which call the same functions in-process). No FastAPI or HTTP client here.

Layout (``settings.triton_model_repository``)::

    echo/                    foundation identity model
    abp_nvsmi_xgb/
      config.pbtxt           version_policy latest 1: Triton serves the highest version
      1/model.py             the code; version 1 has no weights and answers NOT_SYNCED
      <n>/model.py           copied by sync, with
      <n>/model/             the registered model's files (the XGBoost booster)
      <n>/meta.json          {"registered_model", "version", "run_id", "synced_at"}
    dfp/
      config.pbtxt
      1/model.py             one Triton model serves every DFP user of every source
      users/index.json       {"models": {"dfp-duo-alice": "3", ...}} written atomically by sync
      users/<name>/<version>/model.json + state_dict.pt

DFP serving decision: thousands of per-user autoencoders are **not** thousands of Triton models
(each python-backend model is a process). One ``dfp`` model holds an LRU cache of user models
(``settings.dfp_model_cache_size``) loaded on demand from the synced files; the synced index
says which version is in production, and a user without a model of their own is scored by
``dfp-<source>-generic``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ABP_MODEL = "abp_nvsmi_xgb"
DFP_MODEL = "dfp"
ABP_REGISTERED = "abp-nvsmi-xgb"
META_FILE = "meta.json"
MODEL_SUBDIR = "model"
USERS_DIR = "users"
INDEX_FILE = "index.json"
PLACEHOLDER_VERSION = 1
NOT_SYNCED = "NOT_SYNCED"
TOP_FEATURES = 3


class NotSyncedError(RuntimeError):
    """No production model has been synced into the repository yet."""

    def __init__(self, what: str) -> None:
        """Name what is missing; the text starts with NOT_SYNCED for the gateway."""
        super().__init__(
            f"{NOT_SYNCED}: {what} has no production version synced into the Triton repository"
        )


# ---------------------------------------------------------------------------------- files
def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temp file and rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def version_dirs(model_dir: Path) -> list[int]:
    """Numeric version directories of a Triton model, ascending."""
    if not model_dir.is_dir():
        return []
    out = []
    for p in model_dir.iterdir():
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"):
            out.append(int(p.name))
    return sorted(out)


def read_meta(version_dir: Path) -> dict[str, Any] | None:
    """The sync metadata of one version directory, or None (placeholder)."""
    f = version_dir / META_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text())


def read_index(dfp_dir: Path) -> dict[str, str]:
    """DFP model name -> synced production version (empty when nothing is synced)."""
    f = dfp_dir / USERS_DIR / INDEX_FILE
    if not f.is_file():
        return {}
    return {str(k): str(v) for k, v in json.loads(f.read_text()).get("models", {}).items()}


def user_model_dir(dfp_dir: Path, name: str, version: str) -> Path:
    """Directory of one synced DFP model version."""
    return dfp_dir / USERS_DIR / name / str(version)


# ---------------------------------------------------------------------------------- ABP
class AbpScorer:
    """The production ABP booster of one Triton version directory (secml.abp.model scoring)."""

    def __init__(self, version_dir: Path, threshold: float = 0.5) -> None:
        """Load ``<version_dir>/model`` (or stay in NOT_SYNCED state when there is none)."""
        self.meta = read_meta(version_dir)
        self.threshold = threshold
        self.booster = None
        # per-GPU history for temporal boosters, kept for the life of this model instance
        from secml.abp.temporal import TemporalState

        self.state = TemporalState()
        if self.meta is not None:
            self.booster = load_booster(version_dir / MODEL_SUBDIR)
            attr = self.booster.attr("threshold")
            self.threshold = float(self.meta.get("threshold") or attr or threshold)

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
        return score(self.booster, x, uuids, self.state)

    def score_records(self, records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One result dict per raw nvidia-smi record."""
        from secml.abp import features

        name, version = self.model_version
        p = self.score_matrix(features.to_matrix(records), [_gpu(r) for r in records])
        return [
            {
                "score": float(s),
                "anomaly": bool(s >= self.threshold),
                "model": name,
                "version": version,
                "details": {"p_mining": float(s), "threshold": self.threshold},
                "user": _gpu(rec),
                "event_time": _nvsmi_time(rec),
            }
            for s, rec in zip(p, records, strict=True)
        ]


def _gpu(rec: Mapping[str, Any]) -> str | None:
    """The GPU uuid of an nvidia-smi record (the 'user' of an ABP detection)."""
    v = rec.get("nvidia_smi_log.gpu.uuid")
    return None if v is None else str(v)


def _nvsmi_time(rec: Mapping[str, Any]) -> str | None:
    """The record's nvidia-smi timestamp as ISO 8601 UTC, if readable."""
    v = rec.get("nvidia_smi_log.timestamp")
    if not isinstance(v, str):
        return None
    try:
        return pd.Timestamp(v).tz_localize("UTC").isoformat()
    except (ValueError, TypeError):
        return None


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


# ---------------------------------------------------------------------------------- DFP
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
