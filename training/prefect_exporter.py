"""Prometheus exporter for training: Prefect flow-run states and durations, registry aliases.

Prefect 3 has no metrics endpoint of its own, so this process polls the Prefect REST API and
MLflow's model registry and serves what it finds on ``/metrics``
(``settings.prefect_exporter_port``):

- ``prefect_flow_runs{flow,state}``: flow runs expected to start within the lookback window,
  by flow and current state type (``completed``, ``failed``, ``running``, ...);
- ``prefect_flow_runs_finished_total{flow,state}``: finished runs seen (a counter; alert on
  ``increase`` of ``failed``/``crashed``);
- ``prefect_flow_run_duration_seconds{flow,state}``: run time of finished runs (histogram);
- ``registry_production_version{model,version}``: the version behind each model's
  ``production`` alias (the value is the version number);
- ``registry_production_metric{model,metric}``: the metrics logged by that version's run
  (DFP per-user models are left out of both, as in the gateway, to bound cardinality);
- ``registry_production_models{family}``: how many models of a family have a production alias;
- ``gateway_labels_precision{detector,model_version}``: true positives over labelled detections
  (analysts' latest labels in the detections store), the Detectors dashboard's precision;
- ``store_labelled_detections{detector,model_version,label}``: the counts behind it;
- ``prefect_exporter_api_up{api}``: whether the last poll of ``prefect`` / ``mlflow`` / ``store``
  worked.

Run it with ``python -m training.prefect_exporter``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from secml.settings import Settings, get_settings
from secml.sql_read import fetch_all

log = logging.getLogger(__name__)

STATE_TYPES = (
    "scheduled",
    "pending",
    "running",
    "paused",
    "cancelling",
    "completed",
    "failed",
    "crashed",
    "cancelled",
)
TERMINAL = frozenset({"completed", "failed", "crashed", "cancelled"})
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, math.inf)
PAGE = 200
MAX_RUNS = 10_000
PRODUCTION_ALIAS = "production"
DETECTORS = ("abp", "dfp")
LABELS = ("true_positive", "false_positive")


class PrefectApiError(RuntimeError):
    """The Prefect API answered with an error or not at all."""


class TrainingExporter:
    """Polls Prefect and the MLflow registry and keeps the Prometheus metrics up to date."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        lookback: timedelta = timedelta(days=1),
        http: httpx.Client | None = None,
        mlflow_client: Any | None = None,
        store: Any | None = None,
        labels_interval_s: float = 60.0,
    ) -> None:
        """Create the metrics in ``registry`` (a fresh one by default)."""
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.lookback = lookback
        self.api = (settings.prefect_api_url or "").rstrip("/")
        self.http = http or httpx.Client(timeout=10.0, auth=settings.prefect_basic_auth())
        self._mlflow = mlflow_client
        self._store = store
        self._metrics_cache: dict[tuple[str, str], dict[str, float]] = {}
        self._published: dict[int, set[tuple[str, ...]]] = {}
        self.labels_interval_s = labels_interval_s
        self._labels_polled_at = -math.inf
        self._seen: set[str] = set()
        self._flows: dict[str, str] = {}
        self._polled = False
        self.runs = Gauge(
            "prefect_flow_runs",
            "Flow runs expected to start within the lookback window, by current state type.",
            ["flow", "state"],
            registry=self.registry,
        )
        self.finished = Counter(
            "prefect_flow_runs_finished",
            "Finished flow runs seen by the exporter, by final state type.",
            ["flow", "state"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "prefect_flow_run_duration_seconds",
            "Run time of finished flow runs.",
            ["flow", "state"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.production = Gauge(
            "registry_production_version",
            "Version behind the model's production alias (value: the version number).",
            ["model", "version"],
            registry=self.registry,
        )
        self.production_models = Gauge(
            "registry_production_models",
            "Models with a production alias, by family (e.g. dfp-duo counts every user model).",
            ["family"],
            registry=self.registry,
        )
        self.production_metric = Gauge(
            "registry_production_metric",
            "A metric logged by the run of the model's production version.",
            ["model", "metric"],
            registry=self.registry,
        )
        self.precision = Gauge(
            "gateway_labels_precision",
            "True positives over labelled detections (latest label each), by model version.",
            ["detector", "model_version"],
            registry=self.registry,
        )
        self.labelled = Gauge(
            "store_labelled_detections",
            "Labelled detections by latest label, detector and model version.",
            ["detector", "model_version", "label"],
            registry=self.registry,
        )
        self.api_up = Gauge(
            "prefect_exporter_api_up",
            "Whether the last poll of the API succeeded (1) or failed (0).",
            ["api"],
            registry=self.registry,
        )
        self.last_poll = Gauge(
            "prefect_exporter_last_poll_timestamp_seconds",
            "When the exporter last finished a poll.",
            registry=self.registry,
        )

    # -- Prefect -------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to the Prefect API and return the decoded JSON."""
        url = f"{self.api}{path}"
        try:
            response = self.http.post(url, json=body)
        except httpx.HTTPError as exc:
            raise PrefectApiError(f"Prefect API {url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise PrefectApiError(
                f"Prefect API {url} answered {response.status_code}: {response.text[:200]}"
            )
        return response.json()

    def _flow_names(self) -> dict[str, str]:
        """Map flow id to flow name for every flow the server knows."""
        flows: dict[str, str] = {}
        offset = 0
        while True:
            page = self._post("/flows/filter", {"limit": PAGE, "offset": offset})
            flows.update({f["id"]: f["name"] for f in page})
            if len(page) < PAGE:
                return flows
            offset += PAGE

    def _recent_runs(self, now: datetime) -> list[dict[str, Any]]:
        """Flow runs expected to start after ``now - lookback`` (newest first, capped)."""
        after = (now - self.lookback).isoformat()
        runs: list[dict[str, Any]] = []
        while len(runs) < MAX_RUNS:
            body = {
                "flow_runs": {"expected_start_time": {"after_": after}},
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": PAGE,
                "offset": len(runs),
            }
            page = self._post("/flow_runs/filter", body)
            runs.extend(page)
            if len(page) < PAGE:
                break
        return runs

    def poll_prefect(self, now: datetime | None = None) -> None:
        """Refresh the flow-run metrics from the Prefect API.

        The first poll counts every finished run in the window as the baseline. Later, a flow
        seen for the first time gets zero-valued counters and its finished runs are counted at
        the next poll, so Prometheus sees 0 -> n and ``increase()`` (the failed-run alert)
        catches the first failure of a new flow.
        """
        now = now or datetime.now(UTC)
        known = set(self._flows.values())
        self._flows.update(self._flow_names())
        new_flows = set(self._flows.values()) - known if self._polled else set()
        runs = self._recent_runs(now)
        counts = {(name, state): 0 for name in self._flows.values() for state in STATE_TYPES}
        for name in set(self._flows.values()):
            for state in TERMINAL:
                self.finished.labels(flow=name, state=state)  # zero series so increase() sees 0->1
        counted: set[str] = set()
        for run in runs:
            flow = self._flows.get(run.get("flow_id", ""), "unknown")
            state = str(run.get("state_type") or "pending").lower()
            counts[(flow, state)] = counts.get((flow, state), 0) + 1
            run_id = str(run.get("id"))
            if state not in TERMINAL or flow in new_flows:
                continue
            counted.add(run_id)
            if run_id not in self._seen:
                self.finished.labels(flow=flow, state=state).inc()
                self.duration.labels(flow=flow, state=state).observe(_run_seconds(run))
        # Remember the counted runs still in the window so none is counted twice.
        self._seen = counted
        self._polled = True
        self._publish(self.runs, {k: float(n) for k, n in counts.items()})

    # -- MLflow registry ---------------------------------------------------------------
    def _mlflow_client(self) -> Any:
        """The registry reader (created on first use): MLflow's REST API over httpx."""
        if self._mlflow is None:
            self._mlflow = RegistryRest(self.settings.mlflow_tracking_uri or "")
        return self._mlflow

    def poll_registry(self) -> None:
        """Refresh the production versions and their metrics from the MLflow registry."""
        client = self._mlflow_client()
        production: dict[str, str] = {}
        token = None
        while True:
            page = client.search_registered_models(max_results=200, page_token=token)
            for model in page:
                version = (getattr(model, "aliases", None) or {}).get(PRODUCTION_ALIAS)
                if version is not None:
                    production[model.name] = str(version)
            token = getattr(page, "token", None)
            if not token:
                break
        families: dict[str, int] = {}
        versions: dict[tuple[str, ...], float] = {}
        metrics: dict[tuple[str, ...], float] = {}
        for name, version in sorted(production.items()):
            family = _family(name)
            families[family] = families.get(family, 0) + 1
            if _per_user(name):
                continue  # one series per user would explode cardinality (as in the gateway)
            versions[(name, version)] = float(version)
            for metric, value in self._version_metrics(client, name, version).items():
                metrics[(name, metric)] = value
        self._publish(self.production, versions)
        self._publish(self.production_metric, metrics)
        self._publish(self.production_models, {(f,): float(n) for f, n in families.items()})

    def _version_metrics(self, client: Any, name: str, version: str) -> dict[str, float]:
        """The finite metrics of a model version's run (cached: a version's run never changes)."""
        key = (name, version)
        if key not in self._metrics_cache:
            run_id = client.get_model_version(name, version).run_id
            metrics = dict(_numeric(client.get_run(run_id).data.metrics.items())) if run_id else {}
            self._metrics_cache[key] = metrics
        return self._metrics_cache[key]

    # -- detections store ---------------------------------------------------------------
    def poll_labels(self) -> None:
        """Refresh label counts and precision per detector and model version from the store."""
        if self._store is None:
            self._store = LabelCountsSql(self.settings.store_url or "")
        rows: dict[tuple[str, str], dict[str, int]] = {}
        for detector in DETECTORS:
            for version, label, n in _label_counts(self._store, detector):
                counts = rows.setdefault((detector, str(version)), dict.fromkeys(LABELS, 0))
                counts[str(label)] = counts.get(str(label), 0) + int(n)
        labelled: dict[tuple[str, ...], float] = {}
        precision: dict[tuple[str, ...], float] = {}
        for (detector, version), counts in sorted(rows.items()):
            for label, n in counts.items():
                labelled[(detector, version, label)] = float(n)
            judged = counts["true_positive"] + counts["false_positive"]
            if judged:
                precision[(detector, version)] = counts["true_positive"] / judged
        self._publish(self.labelled, labelled)
        self._publish(self.precision, precision)

    def _publish(self, gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
        """Set ``values`` on a labelled gauge and drop the label sets no longer present.

        Unlike ``clear()`` then ``set()``, a scrape in between never sees the series missing.
        """
        for key, value in values.items():
            gauge.labels(*key).set(value)
        previous = self._published.get(id(gauge), set())
        for key in previous - set(values):
            try:
                gauge.remove(*key)
            except KeyError:
                pass
        self._published[id(gauge)] = set(values)

    def poll(self) -> None:
        """Poll each API; a failing one is logged and marked down, the others still update."""
        polls = [("prefect", self.poll_prefect), ("mlflow", self.poll_registry)]
        if time.monotonic() - self._labels_polled_at >= self.labels_interval_s:
            self._labels_polled_at = time.monotonic()
            polls.append(("store", self.poll_labels))
        for api, fn in polls:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - any failure of one API must not stop the other
                log.warning("polling %s failed: %s", api, exc)
                self.api_up.labels(api=api).set(0)
            else:
                self.api_up.labels(api=api).set(1)
        self.last_poll.set(time.time())


class _Page(list[Any]):
    """One page of registered models and the token of the next (None on the last)."""

    token: str | None = None


class RegistryRest:
    """The three ``MlflowClient`` reads the exporter makes, over MLflow's REST API.

    Importing mlflow costs the long-running exporter ~60 MiB of RSS for these three GETs.
    Credentials come from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, as for MlflowClient.
    """

    def __init__(self, tracking_uri: str, http: httpx.Client | None = None) -> None:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        auth = (user, password) if user and password else None
        self.api = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow"
        self.http = http or httpx.Client(timeout=10.0, auth=auth)

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        url = f"{self.api}/{path}"
        response = self.http.get(url, params={k: v for k, v in params.items() if v is not None})
        if response.status_code >= 400:
            raise RuntimeError(
                f"MLflow {url} answered {response.status_code}: {response.text[:200]}"
            )
        return response.json()

    def search_registered_models(self, max_results: int, page_token: str | None) -> _Page:
        body = self._get("registered-models/search", max_results=max_results, page_token=page_token)
        page = _Page(
            SimpleNamespace(
                name=m["name"], aliases={a["alias"]: a["version"] for a in m.get("aliases", [])}
            )
            for m in body.get("registered_models", [])
        )
        page.token = body.get("next_page_token") or None
        return page

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        mv = self._get("model-versions/get", name=name, version=version)["model_version"]
        return SimpleNamespace(run_id=mv.get("run_id") or None)

    def get_run(self, run_id: str) -> SimpleNamespace:
        data = self._get("runs/get", run_id=run_id)["run"].get("data", {})
        metrics = {m["key"]: m["value"] for m in data.get("metrics", [])}
        return SimpleNamespace(data=SimpleNamespace(metrics=metrics))


class LabelCountsSql:
    """Label counts per model version, read from the detections store's tables in one grouped
    SQL query (``secml.sql_read``: a SQLite file through the standard library, PostgreSQL
    through SQLAlchemy).

    The same labels as ``secml.store.DetectionStore.labelled`` (each detection's latest label
    event), without its DataFrame of every labelled detection: importing the store (pandas,
    pyarrow) cost the long-running exporter ~90 MiB of RSS.
    """

    QUERY = (
        "SELECT d.model_version, l.label, COUNT(*) FROM {p}detections d"
        " JOIN (SELECT detection_id, MAX(id) AS lid FROM {p}labels GROUP BY detection_id) x"
        " ON x.detection_id = d.id JOIN {p}labels l ON l.id = x.lid"
        " WHERE d.detector = :detector GROUP BY d.model_version, l.label"
    )

    def __init__(self, url: str, table_prefix: str = "") -> None:
        if not url:
            raise ValueError("no detections store: set SECML_STORE_URL")
        self.url = url
        self.query = self.QUERY.format(p=table_prefix)

    def label_counts(self, detector: str) -> list[tuple[str, str, int]]:
        """(model version, label, detections) of ``detector``'s labelled detections."""
        rows = fetch_all(self.url, self.query, {"detector": detector})
        return [(str(v), str(label), int(n)) for v, label, n in rows]


def _label_counts(store: Any, detector: str) -> list[tuple[str, str, int]]:
    """(model version, label, n) from :class:`LabelCountsSql` or a store with ``labelled()``
    (a ``DetectionStore``: its frame grouped here)."""
    if hasattr(store, "label_counts"):
        return list(store.label_counts(detector))
    df = store.labelled(detector)
    if df.empty:
        return []
    grouped = df.groupby(["model_version", "label"]).size()
    return [(str(v), str(label), int(n)) for (v, label), n in grouped.items()]


def _per_user(name: str) -> bool:
    """Whether a registered model is a DFP per-user model (``dfp-<source>-<user>``)."""
    return name.startswith("dfp-") and not name.endswith("-generic") and name.count("-") >= 2


def _family(name: str) -> str:
    """The model family: the first two parts of the name (``dfp-duo``, ``abp-nvsmi``)."""
    return "-".join(name.split("-")[:2])


def _terminal(run: dict[str, Any]) -> bool:
    """Whether a flow run (API JSON) is in a final state."""
    return str(run.get("state_type") or "").lower() in TERMINAL


def _run_seconds(run: dict[str, Any]) -> float:
    """Run time of a finished flow run: ``total_run_time``, else end minus start."""
    total = run.get("total_run_time")
    if isinstance(total, int | float) and total > 0:
        return float(total)
    start, end = run.get("start_time"), run.get("end_time")
    if start and end:
        return max(0.0, (_parse(end) - _parse(start)).total_seconds())
    return 0.0


def _parse(value: str) -> datetime:
    """Parse an ISO 8601 timestamp from the Prefect API."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _numeric(items: Iterable[tuple[str, Any]]) -> Iterable[tuple[str, float]]:
    """Keep the finite numeric metric values."""
    for key, value in items:
        if isinstance(value, int | float) and math.isfinite(value):
            yield key, float(value)


def serve(exporter: TrainingExporter, host: str, port: int, interval: float) -> None:
    """Serve ``/metrics`` on ``host:port`` and poll every ``interval`` seconds until stopped."""
    server, thread = start_http_server(port, addr=host, registry=exporter.registry)
    log.info("prefect exporter on http://%s:%d/metrics (poll every %.0fs)", host, port, interval)
    stop = threading.Event()
    try:
        while not stop.is_set():
            exporter.poll()
            stop.wait(interval)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.shutdown()
        thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m training.prefect_exporter [--interval S] [--lookback-hours H]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between polls")
    parser.add_argument("--lookback-hours", type=float, default=24.0, help="flow-run window")
    parser.add_argument(
        "--labels-interval", type=float, default=60.0, help="seconds between label-store reads"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    exporter = TrainingExporter(
        settings,
        lookback=timedelta(hours=args.lookback_hours),
        labels_interval_s=args.labels_interval,
    )
    serve(exporter, settings.host, settings.prefect_exporter_port, args.interval)


if __name__ == "__main__":
    main()
