"""The gateway's own Prometheus metrics, named ``gateway_<thing>_<unit>``.

The instrumentator adds the ``http_*`` families; these describe what the platform does.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "gateway_predictions_total",
    "Records scored, by detector, source and outcome (anomaly, normal)",
    ["detector", "source", "outcome"],
)
ANOMALY_SCORE = Histogram(
    "gateway_anomaly_score",
    "Anomaly score of each scored record (ABP: P(mining); DFP: risk, else mean_abs_z)",
    ["detector", "source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0),
)
MODEL_VERSION = Gauge(
    "gateway_model_version_info",
    "Model version that answered the latest request (1 = in service)",
    ["detector", "source", "model", "version"],
)
TRITON_LATENCY = Histogram(
    "gateway_triton_request_duration_seconds",
    "Latency of one Triton inference call, by model and outcome",
    ["model", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUEST_ERRORS = Counter(
    "gateway_predict_errors_total",
    "Rejected or failed /predict requests, by HTTP status",
    ["status"],
)
DETECTIONS_STORED = Counter(
    "gateway_detections_stored_total",
    "Anomalies written to the detections store",
    ["detector", "source"],
)
BATCH_RECORDS = Histogram(
    "gateway_batch_records",
    "Records per /predict request",
    ["detector"],
    buckets=(1, 8, 64, 256, 1024, 4096),
)

SYNC_RUNS = Counter(
    "serving_sync_runs_total",
    "Model sync rounds per model and outcome (changed, unchanged, failed)",
    ["model", "outcome"],
)
SYNC_LAST = Gauge(
    "serving_sync_last_round_timestamp_seconds", "When the sync loop last finished a round"
)

_versions: dict[tuple[str, str, str], str] = {}


def set_model_version(detector: str, source: str, model: str, version: str) -> None:
    """Mark ``model:version`` as in service for (detector, source, model); clear the old one."""
    key = (detector, source, model)
    old = _versions.get(key)
    if old == version:
        return
    if old is not None:
        try:
            MODEL_VERSION.remove(detector, source, model, old)
        except KeyError:
            pass
    MODEL_VERSION.labels(detector=detector, source=source, model=model, version=version).set(1)
    _versions[key] = version
