"""Plain functions behind the analyst app: no Streamlit here, so each is testable on its own.

Pages call these with clients from :mod:`ui.clients`. Each function talks to one service
(detections store, MLflow, Prefect, Prometheus) and returns plain Python or DataFrames.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from secml.settings import ROOT, Settings

log = logging.getLogger(__name__)

LABELS = ("true_positive", "false_positive")
PRODUCTION = "production"
PROMOTION_TAG = "promotion."
DEPLOYMENTS = ("abp-train/default", "dfp-train/default", "dfp-infer/default")
CONTROL_DIR = ROOT / "control_messages"
# Keys under which a stored detection may carry per-feature z-scores (dict feature -> z).
_Z_KEYS = ("z_scores", "feature_z", "top_features", "top", "features", "z")


class BackendError(RuntimeError):
    """A service answered, or failed to answer, in a way the analyst must be told about."""


# ---------------------------------------------------------------- detections and labels


def as_dict(value: Any) -> dict:
    """A record column value as a dict (stored as dict or JSON text)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return {}
    return {}


def detection_id_column(df: pd.DataFrame) -> str:
    """The name of the detection id column of a store DataFrame (``detection_id`` or ``id``)."""
    for col in ("detection_id", "id"):
        if col in df.columns:
            return col
    raise BackendError(f"detections table has no id column (columns: {list(df.columns)})")


def score_column(df: pd.DataFrame) -> str | None:
    """The score column of a detections DataFrame, if any."""
    for col in ("score", "mean_abs_z", "anomaly_score"):
        if col in df.columns:
            return col
    return None


def filter_detections(
    df: pd.DataFrame,
    *,
    detectors: Iterable[str] = (),
    sources: Iterable[str] = (),
    users: Iterable[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    min_score: float | None = None,
    unlabelled_only: bool = False,
) -> pd.DataFrame:
    """Filter a detections DataFrame by detector, source, user, time range and score."""
    out = df
    for col, wanted in (("detector", detectors), ("source", sources), ("user", users)):
        wanted = list(wanted)
        if wanted and col in out.columns:
            out = out[out[col].isin(wanted)]
    if (start or end) and "event_time" in out.columns:
        times = pd.to_datetime(out["event_time"], utc=True, errors="coerce")
        keep = pd.Series(True, index=out.index)
        if start:
            keep &= times.isna() | (times >= pd.Timestamp(start).tz_convert("UTC"))
        if end:
            keep &= times.isna() | (times <= pd.Timestamp(end).tz_convert("UTC"))
        out = out[keep]  # a detection without an event time is never hidden by the range
    scol = score_column(out)
    if min_score is not None and scol:
        out = out[pd.to_numeric(out[scol], errors="coerce") >= min_score]
    if unlabelled_only and "label" in out.columns:
        out = out[out["label"].isna()]
    return out


def with_latest_labels(detections: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Add the latest ``label`` / ``labelled_by`` / ``labelled_at`` to detections lacking them."""
    if "label" in detections.columns or labelled is None or labelled.empty:
        return detections
    idc = detection_id_column(detections)
    cols = [c for c in ("detection_id", "label", "labelled_by", "labelled_at") if c in labelled]
    latest = labelled[cols].drop_duplicates("detection_id", keep="last")
    return detections.merge(latest, how="left", left_on=idc, right_on="detection_id").drop(
        columns=[] if idc == "detection_id" else ["detection_id"]
    )


def z_scores(row: Mapping[str, Any]) -> dict[str, float]:
    """Per-feature absolute z-scores of a detection, from wherever the store put them."""
    found: dict[str, float] = {}
    sources = [row] + [as_dict(row.get(k)) for k in ("details", "result", "scores")]
    for src in sources:
        for key, value in src.items():
            if isinstance(key, str) and key.endswith("_z_loss"):
                try:
                    found[key.removesuffix("_z_loss")] = abs(float(value))
                except (TypeError, ValueError):
                    continue
    if found:
        return found
    for src in sources:
        for key in _Z_KEYS:
            value = src.get(key)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    continue
            if isinstance(value, Mapping):
                return {str(k): abs(float(v)) for k, v in value.items() if _is_number(v)}
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, Mapping) and "feature" in item:
                        z = item.get("z", item.get("z_score", item.get("score")))
                        if _is_number(z):
                            found[str(item["feature"])] = abs(float(z))
                if found:
                    return found
    return found


def _is_number(value: Any) -> bool:
    """Whether ``value`` converts to a finite float."""
    try:
        return pd.notna(float(value))
    except (TypeError, ValueError):
        return False


def label_events(
    store: Any, ids: Iterable[int], label: str, user: str, note: str = ""
) -> list[int]:
    """Label the event of each detection id once (``DetectionStore.label_event``); return ids."""
    if label not in LABELS:
        raise BackendError(f"label must be one of {LABELS}, got {label!r}")
    if not user:
        raise BackendError("a label needs the analyst's name: sign in first")
    done = []
    for det_id in ids:
        store.label_event(int(det_id), label, user=user, note=note)
        done.append(int(det_id))
    log.info("%s labelled %d event(s) %s", user, len(done), label)
    return done


def precision_by_version(labelled: pd.DataFrame) -> pd.DataFrame:
    """Label-based precision per (detector, model version): TP / (TP + FP) of labelled ones."""
    cols = ["detector", "model_version", "true_positive", "false_positive", "labelled", "precision"]
    if labelled is None or labelled.empty:
        return pd.DataFrame(columns=cols)
    df = labelled.copy()
    if "detection_id" in df.columns:
        df = df.drop_duplicates("detection_id", keep="last")
    if "detector" not in df.columns:
        df["detector"] = ""
    counts = (
        df.groupby(["detector", "model_version", "label"]).size().unstack("label", fill_value=0)
    )
    for lab in LABELS:
        if lab not in counts.columns:
            counts[lab] = 0
    counts = counts[list(LABELS)].reset_index()
    counts["labelled"] = counts["true_positive"] + counts["false_positive"]
    counts["precision"] = counts["true_positive"] / counts["labelled"]
    counts.columns.name = None
    return counts[cols].sort_values(["detector", "model_version"]).reset_index(drop=True)


# ---------------------------------------------------------------- Prefect


@dataclass(frozen=True)
class RunInfo:
    """One flow run as the Training page shows it."""

    id: str
    name: str
    deployment: str
    state: str
    created: datetime | None
    url: str


def prefect_ui_url(settings: Settings) -> str:
    """The Prefect UI base URL derived from the API URL."""
    return str(settings.prefect_api_url).rstrip("/").removesuffix("/api")


def prefect_problem(http: Any, settings: Settings) -> str | None:
    """Why the Prefect API cannot be used right now, or None when its health check answers."""
    url = f"{str(settings.prefect_api_url).rstrip('/')}/health"
    try:
        resp = http.get(url, timeout=3.0)
    except Exception as exc:
        return f"Prefect at {settings.prefect_api_url} is not available: {exc}"
    if resp.status_code != 200:
        return f"Prefect at {settings.prefect_api_url} answered {resp.status_code} on /health"
    return None


def deployment_parameters(client: Any, deployment: str) -> dict[str, Any]:
    """The parameter schema's properties of a deployment (name -> JSON schema)."""
    dep = _read_deployment(client, deployment)
    schema = dep.parameter_openapi_schema or {}
    return dict(schema.get("properties") or {})


def _read_deployment(client: Any, deployment: str) -> Any:
    """Read a deployment by ``flow/deployment`` name with a clear error when missing."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(deployment)
    except ObjectNotFound as exc:
        raise BackendError(
            f"deployment {deployment!r} is not registered in Prefect; run "
            "`python -m training.deploy` (make up does it)"
        ) from exc


def message_parameter(properties: Mapping[str, Any]) -> str | None:
    """The name of the parameter that takes a control message, if the flow has one."""
    for name in properties:
        if "message" in name or "control" in name:
            return name
    return None


def start_run(
    client: Any,
    settings: Settings,
    deployment: str,
    parameters: Mapping[str, Any] | None = None,
    control_message: Mapping[str, Any] | None = None,
) -> RunInfo:
    """Create a flow run of ``deployment`` with parameters and, optionally, a control message."""
    dep = _read_deployment(client, deployment)
    params = dict(parameters or {})
    if control_message is not None:
        props = (dep.parameter_openapi_schema or {}).get("properties") or {}
        key = message_parameter(props)
        if key is None:
            raise BackendError(
                f"deployment {deployment!r} takes no control message "
                f"(parameters: {sorted(props) or 'none'})"
            )
        params[key] = dict(control_message)
    run = client.create_flow_run_from_deployment(dep.id, parameters=params)
    log.info("started %s run %s", deployment, run.id)
    return _run_info(run, deployment, settings)


def _run_info(run: Any, deployment: str, settings: Settings) -> RunInfo:
    """A RunInfo from a Prefect FlowRun."""
    state = run.state.name if run.state else "UNKNOWN"
    return RunInfo(
        id=str(run.id),
        name=run.name,
        deployment=deployment,
        state=state,
        created=run.created,
        url=f"{prefect_ui_url(settings)}/runs/flow-run/{run.id}",
    )


def recent_runs(
    client: Any, settings: Settings, deployments: Iterable[str] = DEPLOYMENTS, limit: int = 20
) -> list[RunInfo]:
    """The latest flow runs of the given deployments, newest first."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    names: dict[Any, str] = {}
    for name in deployments:
        try:
            names[client.read_deployment_by_name(name).id] = name
        except ObjectNotFound:
            continue
    if not names:
        return []
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(names))),
        sort=FlowRunSort.START_TIME_DESC,
        limit=limit,
    )
    runs = sorted(runs, key=lambda r: r.created or datetime.min.replace(tzinfo=UTC), reverse=True)
    return [_run_info(r, names.get(r.deployment_id, "?"), settings) for r in runs]


# ---------------------------------------------------------------- MLflow registry


def mlflow_model_url(settings: Settings, name: str, version: str | None = None) -> str:
    """Link to a registered model (or one version) in the MLflow UI."""
    base = str(settings.mlflow_tracking_uri).rstrip("/")
    return f"{base}/#/models/{name}" + (f"/versions/{version}" if version else "")


def registered_models(client: Any, name_contains: str = "", limit: int = 500) -> pd.DataFrame:
    """Registered models (name containing ``name_contains``) with aliases and latest version."""
    rows = []
    needle = name_contains.replace("'", "").strip()
    query = f"name LIKE '%{needle}%'" if needle else None
    for rm in client.search_registered_models(filter_string=query, max_results=limit):
        aliases = dict(getattr(rm, "aliases", {}) or {})
        latest = max((int(v.version) for v in rm.latest_versions or []), default=None)
        rows.append(
            {
                "name": rm.name,
                "production": int(aliases[PRODUCTION]) if PRODUCTION in aliases else None,
                "aliases": ", ".join(f"{a}→v{v}" for a, v in sorted(aliases.items())),
                "latest_version": latest,
            }
        )
    df = pd.DataFrame(rows, columns=["name", "production", "aliases", "latest_version"])
    return df.astype({"production": "Int64", "latest_version": "Int64"})


def model_versions(client: Any, name: str) -> pd.DataFrame:
    """Versions of a registered model with aliases, metrics and data window tags."""
    rm = client.get_registered_model(name)
    by_version: dict[str, list[str]] = {}
    for alias, ver in (getattr(rm, "aliases", {}) or {}).items():
        by_version.setdefault(str(ver), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except Exception as exc:  # a deleted run must not hide the version
                log.warning("run %s of %s v%s unreadable: %s", mv.run_id, name, mv.version, exc)
        rows.append(
            {
                "version": int(mv.version),
                "aliases": ", ".join(sorted(by_version.get(str(mv.version), []))),
                "created": pd.to_datetime(mv.creation_timestamp, unit="ms", utc=True),
                "run_id": mv.run_id,
                **{f"metric.{k}": v for k, v in sorted(metrics.items())},
                **{f"tag.{k}": v for k, v in sorted((mv.tags or {}).items())},
            }
        )
    df = pd.DataFrame(rows)
    return df.sort_values("version", ascending=False).reset_index(drop=True) if rows else df


def production_version(client: Any, name: str) -> int | None:
    """The version that holds the ``production`` alias, or None."""
    aliases = getattr(client.get_registered_model(name), "aliases", {}) or {}
    ver = aliases.get(PRODUCTION)
    return int(ver) if ver is not None else None


def _metric(metrics: Mapping[str, float], *names: str) -> float | None:
    """The first metric whose name matches one of ``names`` (exact, then by suffix)."""
    for n in names:
        if n in metrics:
            return float(metrics[n])
    for n in names:
        for key, value in metrics.items():
            if key.endswith(n):
                return float(value)
    return None


def _version_metrics(client: Any, name: str, version: int) -> dict[str, float]:
    """Metrics of the run that produced ``name`` version ``version``."""
    mv = client.get_model_version(name, str(version))
    return dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}


def gate_check(
    client: Any, settings: Settings, name: str, version: int, tolerance: float | None = None
) -> tuple[bool, str]:
    """The promotion gate's rules, applied to a hand promotion on the versions' recorded metrics.

    ABP (``abp-*``): ``secml.abp.gate.decide`` — recall at ``settings.abp_target_fpr`` at least
    ``settings.abp_min_recall`` and not below production's recorded recall. DFP (``dfp-*``):
    ``secml.dfp.train.gate_passes`` — validation loss not above production's beyond
    ``tolerance`` (default ``settings.dfp_promotion_tolerance``). The training flows apply the
    same functions when they register a version (ABP re-scores production on the new
    evaluation data there; by hand only the recorded figures are at hand).
    """
    if tolerance is None:
        tolerance = float(getattr(settings, "dfp_promotion_tolerance", 0.05))
    new = _version_metrics(client, name, version)
    prod_ver = production_version(client, name)
    if prod_ver == version:
        return False, f"{name} v{version} already holds '{PRODUCTION}'"
    old = _version_metrics(client, name, prod_ver) if prod_ver is not None else {}
    if name.startswith("abp-"):
        from secml.abp.gate import decide

        recall = _metric(new, "target_fpr_recall")
        if recall is None:
            return False, (
                f"{name} v{version} has no recall at the target FPR (metric "
                "target_fpr_recall); the gate cannot judge it"
            )
        f1 = _metric(new, "f1", "test_f1", "f1_score")
        old_recall = _metric(old, "target_fpr_recall") if prod_ver is not None else None
        return decide(
            recall,
            settings.abp_min_recall,
            settings.abp_target_fpr,
            float("nan") if f1 is None else f1,
            None if prod_ver is None else str(prod_ver),
            old_recall,
            same_data=False,
        )
    from secml.dfp.train import gate_passes

    loss = _metric(new, "val_loss", "validation_loss", "loss")
    if loss is None:
        return False, f"{name} v{version} has no validation loss metric; the gate cannot judge it"
    old_loss = _metric(old, "val_loss", "validation_loss", "loss")
    if not gate_passes(loss, old_loss, tolerance):
        return False, (
            f"validation loss {loss:.4f} is worse than production v{prod_ver} "
            f"({old_loss:.4f}) beyond {tolerance:.0%}"
        )
    return True, f"validation loss {loss:.4f} passes"


def promote(
    client: Any,
    settings: Settings,
    name: str,
    version: int,
    user: str,
    *,
    force: bool = False,
    reason: str = "",
) -> dict[str, Any]:
    """Move ``production`` to ``version`` through the gate (or forced with a reason); record it.

    The event is recorded as a registered-model tag ``promotion.<UTC timestamp>`` holding JSON
    (who, from, to, gate verdict, forced, reason) and as tags on the promoted version.
    """
    if not user:
        raise BackendError("sign in first: promotions are recorded with the analyst's name")
    ok, verdict = gate_check(client, settings, name, version)
    if not ok and not force:
        raise BackendError(f"the gate refused {name} v{version}: {verdict}")
    if force and not reason.strip():
        raise BackendError("a forced promotion needs a reason; it is recorded")
    previous = production_version(client, name)
    client.set_registered_model_alias(name, PRODUCTION, str(version))
    now = datetime.now(UTC)
    kind = "rollback" if previous is not None and version < previous else "promote"
    event = {
        "at": now.isoformat(timespec="seconds"),
        "by": user,
        "kind": kind,
        "from_version": previous,
        "to_version": version,
        "gate": verdict,
        "gate_passed": ok,
        "forced": force,
        "reason": reason,
    }
    key = f"{PROMOTION_TAG}{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    client.set_registered_model_tag(name, key, json.dumps(event))
    for tag, value in (
        ("promoted_by", user),
        ("promoted_at", event["at"]),
        ("promotion_forced", str(force).lower()),
        ("promotion_reason", reason or verdict),
    ):
        client.set_model_version_tag(name, str(version), tag, value)
    log.info("%s: %s %s v%s -> v%s (%s)", user, kind, name, previous, version, verdict)
    return event


HISTORY_COLUMNS = ["at", "by", "kind", "from_version", "to_version", "gate", "forced", "reason"]
# Version tags the training flows' gates write: ABP ``gate=passed``, DFP ``gate=promoted``.
_AUTO_PASSED = ("passed", "promoted")


def promotion_history(client: Any, name: str) -> pd.DataFrame:
    """Every move of ``production`` on record, newest first: hand promotions and roll-backs
    (registered-model tags written by :func:`promote`) and the training gate's automatic
    promotions (versions tagged ``gate=passed``/``promoted`` by the flows)."""
    rm = client.get_registered_model(name)
    tags = rm.tags or {}
    rows = []
    for key in (k for k in tags if k.startswith(PROMOTION_TAG)):
        try:
            event = json.loads(tags[key])
        except json.JSONDecodeError:
            log.warning("unreadable promotion tag %s on %s", key, name)
            continue
        # the tag key carries microseconds; ``at`` (seconds) can tie between quick promotions
        rows.append({**event, "_order": key.removeprefix(PROMOTION_TAG)})
    for mv in client.search_model_versions(f"name='{name}'"):
        vtags = mv.tags or {}
        if vtags.get("gate") not in _AUTO_PASSED:
            continue
        at = datetime.fromtimestamp(
            (mv.last_updated_timestamp or mv.creation_timestamp) / 1000, tz=UTC
        )
        champion = vtags.get("gate_champion", "").rpartition(":")[2]
        rows.append(
            {
                "at": at.isoformat(timespec="seconds"),
                "by": "training gate (automatic)",
                "kind": "automatic",
                "from_version": int(champion) if champion.isdigit() else None,
                "to_version": int(mv.version),
                "gate": vtags.get("gate_reason") or f"gate {vtags['gate']}",
                "forced": False,
                "reason": vtags.get("gate_reason", ""),
                "_order": at.strftime("%Y%m%dT%H%M%S.%fZ"),
            }
        )
    if not rows:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    df = pd.DataFrame(rows).sort_values("_order", ascending=False).drop(columns="_order")
    extra = [c for c in df.columns if c not in HISTORY_COLUMNS]
    return df[[c for c in HISTORY_COLUMNS if c in df.columns] + extra].reset_index(drop=True)


# ---------------------------------------------------------------- control messages


def control_examples(directory: Path = CONTROL_DIR) -> dict[str, str]:
    """Example control messages by file name (text as written)."""
    if not directory.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(directory.glob("*.json"))}


def parse_message_text(text: str) -> dict[str, Any]:
    """Parse and validate a control message typed by an analyst; errors name line and field."""
    from secml.control import parse_control_message

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    try:
        parse_control_message(data)
    except Exception as exc:
        raise BackendError(f"invalid control message: {exc}") from exc
    return data


def broker_reachable(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Whether any ``host:port`` of a Kafka bootstrap list accepts a TCP connection."""
    import socket

    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


# ---------------------------------------------------------------- monitoring


def dashboard_panels(dashboard: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``(panel title, [PromQL])`` per panel, from ``secml.monitoring.panel_queries``."""
    from secml.monitoring import panel_queries

    panels: dict[str, list[str]] = {}
    for title, expr in panel_queries(dict(dashboard)):
        panels.setdefault(title, []).append(expr)
    return list(panels.items())


def prometheus_range(
    http: Any,
    base_url: str,
    expr: str,
    minutes: int = 60,
    step_s: int = 30,
    legend: str = "",
) -> pd.DataFrame:
    """Run a range query; return a wide DataFrame (time index, one column per series)."""
    end = datetime.now(UTC)
    start = end - timedelta(minutes=minutes)
    resp = http.get(
        f"{base_url.rstrip('/')}/api/v1/query_range",
        params={"query": expr, "start": start.timestamp(), "end": end.timestamp(), "step": step_s},
    )
    body = resp.json()
    if body.get("status") != "success":
        raise BackendError(f"Prometheus refused {expr!r}: {body.get('error', resp.text[:200])}")
    frames = {}
    for series in body["data"]["result"]:
        labels = series.get("metric", {})
        name = _legend(legend, labels) or ", ".join(f"{k}={v}" for k, v in labels.items()) or expr
        values = series.get("values", [])
        frames[name] = pd.Series(
            [float(v) for _, v in values],
            index=pd.to_datetime([float(t) for t, _ in values], unit="s", utc=True),
        )
    return pd.DataFrame(frames)


def _legend(fmt: str, labels: Mapping[str, str]) -> str:
    """Apply a Grafana ``{{label}}`` legend format."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")


def prometheus_alerts(http: Any, base_url: str) -> pd.DataFrame:
    """Alerts Prometheus holds now (``/api/v1/alerts``): firing first, then pending."""
    cols = ["alert", "state", "severity", "since", "summary", "labels"]
    resp = http.get(f"{base_url.rstrip('/')}/api/v1/alerts", timeout=3.0)
    body = resp.json()
    if body.get("status") != "success":
        raise BackendError(f"Prometheus refused the alerts query: {body.get('error', '?')}")
    rows = []
    for a in body["data"].get("alerts", []):
        labels = dict(a.get("labels") or {})
        ann = dict(a.get("annotations") or {})
        rows.append(
            {
                "alert": labels.pop("alertname", "?"),
                "state": a.get("state", "?"),
                "severity": labels.pop("severity", ""),
                "since": pd.to_datetime(a.get("activeAt"), utc=True, errors="coerce"),
                "summary": ann.get("summary") or ann.get("description") or "",
                "labels": ", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
            }
        )
    df = pd.DataFrame(rows, columns=cols)
    order = {"firing": 0, "pending": 1}
    return df.sort_values(
        ["state", "since"], key=lambda s: s.map(order) if s.name == "state" else s
    ).reset_index(drop=True)


# ---------------------------------------------------------------- explanations


def split_model_version(model_version: str) -> tuple[str, str]:
    """``"abp-nvsmi-xgb:3"`` -> ``("abp-nvsmi-xgb", "3")``; BackendError when malformed."""
    name, _, version = str(model_version).rpartition(":")
    if not name or not version.isdigit():
        raise BackendError(f"model version {model_version!r} is not '<registered name>:<n>'")
    return name, version


def load_abp_booster(tracking_uri: str, model_version: str) -> Any:
    """The XGBoost booster of one registered ABP version, downloaded from MLflow."""
    import tempfile

    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from secml.abp.model import load_booster

    name, version = split_model_version(model_version)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="abp-explain-") as tmp:
        try:
            # the version's storage location: no ``models:/`` lookup through global registry
            location = client.get_model_version_download_uri(name, version)
            path = Path(
                download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
            )
        except Exception as exc:
            raise BackendError(
                f"cannot load {name} v{version} from MLflow at {tracking_uri}: {exc}"
            ) from exc
        files = sorted(path.rglob("model.ubj")) or sorted(path.rglob("model.json"))
        if not files:
            raise BackendError(f"{name} v{version} has no XGBoost model file in MLflow")
        return load_booster(str(files[0]))


def abp_explanation(booster: Any, row: Mapping[str, Any]) -> Any:
    """``secml.abp.explain.Explanation`` of a stored ABP detection, at its stored threshold."""
    from secml.abp.explain import explain

    details = as_dict(row.get("details"))
    threshold = details.get("threshold")
    record = as_dict(row.get("record"))
    if not record:
        raise BackendError("the detection holds no raw record to explain")
    return explain(booster, record, None if threshold is None else float(threshold))


def dfp_expected_actual(row: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per feature: the value seen, what the user's model expected, and |z|; plus the scoring
    facts (score kind, threshold, mean |z|, reasons) kept with the detection."""
    details = as_dict(row.get("details"))
    items = details.get("top_features") or details.get("top") or []
    rows = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or "feature" not in item:
            continue
        rows.append(
            {
                "feature": str(item["feature"]),
                "actual": item.get("value"),
                "expected": item.get("expected"),
                "abs_z": abs(float(item["z"])) if _is_number(item.get("z")) else None,
            }
        )
    if not rows:
        rows = [
            {"feature": f, "actual": None, "expected": None, "abs_z": z}
            for f, z in sorted(z_scores(row).items(), key=lambda t: -t[1])
        ]
    table = pd.DataFrame(rows, columns=["feature", "actual", "expected", "abs_z"])
    for col in ("actual", "expected"):  # mixed numbers and words: show them as text
        table[col] = table[col].map(lambda v: "" if v is None else str(v))
    facts = {
        "score_kind": details.get("score_kind", "mean_abs_z"),
        "threshold": details.get("threshold"),
        "mean_abs_z": details.get("mean_abs_z"),
        "reasons": details.get("reasons", ""),
    }
    return table, facts


# ---------------------------------------------------------------- run and message status


def run_status(client: Any, settings: Settings, run_id: str) -> RunInfo:
    """The current state of one flow run."""
    run = client.read_flow_run(run_id)
    names = {}
    if run.deployment_id:
        try:
            dep = client.read_deployment(run.deployment_id)
            names[run.deployment_id] = dep.name
        except Exception:  # a deleted deployment must not hide the run
            log.warning("deployment %s of run %s unreadable", run.deployment_id, run_id)
    return _run_info(run, names.get(run.deployment_id, "?"), settings)


def message_dispatch_keys(message: Mapping[str, Any], message_id: str) -> list[str]:
    """The Prefect idempotency keys the control-message consumer gives this message's runs."""
    from secml.control import parse_control_message
    from training.consumer.validation import plan_dispatches

    msg = parse_control_message({**dict(message), "id": message_id})
    return [d.idempotency_key for d in plan_dispatches(msg)]  # [] for a load-only message


def message_runs(client: Any, settings: Settings, keys: Iterable[str]) -> list[RunInfo]:
    """Flow runs the consumer created for a control message (found by idempotency key)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    keys = list(keys)
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=keys))
    )
    deployment = {k: k.split(":")[-1] for k in keys}
    return [
        _run_info(r, deployment.get(r.idempotency_key or "", "?"), settings)
        for r in sorted(runs, key=lambda r: r.created or datetime.min.replace(tzinfo=UTC))
    ]


# ---------------------------------------------------------------- run comparison

# How the comparison page groups metrics by name (first match wins).
METRIC_GROUPS: tuple[tuple[str, str], ...] = (
    ("per GPU model", r"(gpu_model|product|board|lomo)"),
    ("per mining profile / attack type", r"^(recall_|incident_recall_|attack_)"),
    ("FPR per benign kind", r"^(fpr_|specificity_|benign_)"),
    ("rows per segment", r"^rows_"),
)


def metric_group(name: str) -> str:
    """The comparison group of a metric name (``overall`` when no pattern matches)."""
    for group, pattern in METRIC_GROUPS:
        if re.search(pattern, name):
            return group
    return "overall"


def compare_versions(client: Any, name: str, versions: Iterable[int]) -> pd.DataFrame:
    """Metrics of several versions side by side: one row per metric, one column per version,
    with the metric's ``group`` (:data:`METRIC_GROUPS`)."""
    cols: dict[str, dict[str, float]] = {}
    for v in versions:
        cols[f"v{int(v)}"] = _version_metrics(client, name, int(v))
    if not cols:
        return pd.DataFrame(columns=["group", "metric"])
    df = pd.DataFrame(cols)
    df.index.name = "metric"
    df = df.reset_index()
    df.insert(0, "group", df["metric"].map(metric_group))
    return df.sort_values(["group", "metric"]).reset_index(drop=True)


def version_runs(client: Any, name: str, versions: Iterable[int]) -> dict[int, tuple[str, str]]:
    """``version -> (run id, experiment id)`` for versions that came from a run."""
    out = {}
    for v in versions:
        mv = client.get_model_version(name, str(int(v)))
        if mv.run_id:
            out[int(v)] = (mv.run_id, client.get_run(mv.run_id).info.experiment_id)
    return out


def mlflow_compare_url(settings: Settings, runs: Mapping[int, tuple[str, str]]) -> str:
    """Link to MLflow's run-comparison view for the given runs."""
    from urllib.parse import quote

    ids = json.dumps([r for r, _ in runs.values()])
    exps = json.dumps(sorted({e for _, e in runs.values()}))
    base = str(settings.mlflow_tracking_uri).rstrip("/")
    return f"{base}/#/compare-runs?runs={quote(ids)}&experiments={quote(exps)}"


def version_plots(client: Any, run_id: str) -> list[str]:
    """Image artifacts of a run under ``plots/`` (score distributions, ROC, per profile)."""
    try:
        return sorted(
            f.path
            for f in client.list_artifacts(run_id, "plots")
            if f.path.endswith((".png", ".svg", ".jpg"))
        )
    except Exception as exc:
        log.warning("artifacts of run %s unreadable: %s", run_id, exc)
        return []
