"""Health checks: is each local server up and answering as itself (not another program)?

Each check takes the settings and returns True only for an answer specific to that service.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from secml.settings import Settings


def _get(url: str, timeout: float = 2.0, **kw: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def mlflow_ready(s: Settings) -> bool:
    """True when the MLflow server at ``s.mlflow_tracking_uri`` answers an API call."""
    auth = (s.mlflow_username, s.mlflow_password.get_secret_value()) if s.mlflow_password else None
    r = _get(
        f"{s.mlflow_tracking_uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "Default"},
        auth=auth,
    )
    return r is not None and r.status_code == 200 and "experiment" in r.text


def prefect_ready(s: Settings) -> bool:
    r = _get(f"{s.prefect_api_url}/health")
    return r is not None and r.status_code == 200 and r.text.strip() == "true"


def worker_ready(s: Settings) -> bool:
    try:
        r = httpx.post(
            f"{s.prefect_api_url}/work_pools/{s.prefect_work_pool}/workers/filter",
            json={},
            timeout=2.0,
            auth=s.prefect_basic_auth(),
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and any(w.get("status") == "ONLINE" for w in r.json())


def triton_ready(s: Settings) -> bool:
    meta = _get(f"http://{s.triton_url}/v2")
    ready = _get(f"http://{s.triton_url}/v2/health/ready")
    return (
        meta is not None
        and meta.status_code == 200
        and meta.json().get("name") == "triton"
        and ready is not None
        and ready.status_code == 200
    )


def gateway_ready(s: Settings) -> bool:
    r = _get(f"{s.gateway_url}/health")
    return r is not None and r.status_code == 200 and "status" in r.text


def ui_ready(s: Settings) -> bool:
    r = _get(f"{s.ui_url}/_stcore/health")
    return r is not None and r.status_code == 200 and r.text.strip() == "ok"


def kafka_ready(s: Settings) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(**s.kafka_client_config(), request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def prometheus_ready(s: Settings) -> bool:
    r = _get(f"{s.prometheus_url}/-/ready")
    return r is not None and r.status_code == 200 and "Prometheus" in r.text


def metrics_ready(port_field: str, marker: str) -> Callable[[Settings], bool]:
    def check(s: Settings) -> bool:
        r = _get(f"http://{s.host}:{getattr(s, port_field)}/metrics")
        return r is not None and r.status_code == 200 and marker in r.text

    return check
