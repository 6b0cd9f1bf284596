"""The service specs: every local server, how it starts, what it needs first, how it answers.

One table (:data:`SERVICES`) used by ``make up``, the test fixtures and the benchmarks.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from secml.settings import ROOT, Settings
from secml.stack import readiness as ready
from secml.stack.mlflow_server import UVICORN
from secml.stack.preparation import (
    mlflow_command,
    mlflow_env,
    mlflow_started,
    prefect_env,
    prefect_server_command,
    prefect_server_env,
    prefect_worker_command,
    prepare_mlflow,
    prepare_prometheus,
    prepare_triton,
    prepare_worker,
    triton_command,
    triton_env,
)
from secml.stack.processes import VENV_BIN


@dataclass(frozen=True)
class Service:
    """One local server: how to start it and how to know it answers."""

    name: str
    ports: tuple[str, ...]  # settings fields holding the ports it binds; the first is its main port
    url: Callable[[Settings], str]
    command: Callable[[Settings], list[str]]
    ready: Callable[[Settings], bool]
    env: Callable[[Settings], dict[str, str]] = field(default=lambda s: {})
    prepare: Callable[[Settings], None] | None = None
    started: Callable[[Settings], None] | None = None  # runs once it answers (accounts...)
    after: tuple[str, ...] = ()  # services that must be ready before this one starts
    startup_timeout_s: float = 120.0
    stop_signal: int = signal.SIGTERM  # what asks it to stop (SIGKILL follows after a grace)


def _py(*args: str) -> Callable[[Settings], list[str]]:
    return lambda s: [str(VENV_BIN / "python"), *args]


SERVICES: tuple[Service, ...] = (
    Service(
        "mlflow",
        ("mlflow_port",),
        lambda s: s.mlflow_tracking_uri or "",
        mlflow_command,
        ready.mlflow_ready,
        env=mlflow_env,
        prepare=prepare_mlflow,
        started=mlflow_started,
    ),
    Service(
        "prefect",
        ("prefect_port",),
        lambda s: (s.prefect_api_url or "").removesuffix("/api"),
        prefect_server_command,
        ready.prefect_ready,
        env=prefect_server_env,
    ),
    Service(
        "triton",
        ("triton_http_port", "triton_grpc_port", "triton_metrics_port"),
        lambda s: f"http://{s.triton_url}",
        triton_command,
        ready.triton_ready,
        env=triton_env,
        prepare=prepare_triton,
    ),
    Service(
        "kafka",
        ("kafka_port",),
        lambda s: f"kafka://{s.kafka_bootstrap_servers}",
        lambda s: [
            str(VENV_BIN / "noida-db"),
            "start",
            "--only",
            "kafka",
            "--host",
            s.host,
            "--kafka-port",
            str(s.kafka_port),
            "--data-dir",
            str(s.run_dir / "kafka"),
        ],
        ready.kafka_ready,
    ),
    Service(
        "gateway",
        ("gateway_port",),
        lambda s: s.gateway_url or "",
        lambda s: [  # uvicorn with pyarrow unimportable: pandas would map ~38 MiB of it
            str(VENV_BIN / "python"),
            "-c",
            UVICORN,
            "serving.app:app",
            "--host",
            s.host,
            "--port",
            str(s.gateway_port),
            "--no-access-log",
        ],
        ready.gateway_ready,
    ),
    Service(  # follows the MLflow production aliases into Triton (alias move -> served in s)
        "sync",
        ("sync_metrics_port",),
        lambda s: f"http://{s.host}:{s.sync_metrics_port}/metrics",
        lambda s: [
            str(VENV_BIN / "python"),
            "-m",
            "serving.sync",
            "--poll",
            "--metrics-port",
            str(s.sync_metrics_port),
        ],
        ready.metrics_ready("sync_metrics_port", "serving_sync_runs_total"),
        after=("mlflow", "triton"),
    ),
    Service(
        "ui",
        ("ui_port",),
        lambda s: s.ui_url or "",
        lambda s: [
            str(VENV_BIN / "streamlit"),
            "run",
            str(ROOT / "ui" / "app.py"),
            "--server.address",
            s.host,
            "--server.port",
            str(s.ui_port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--client.toolbarMode",
            "viewer",
        ],
        ready.ui_ready,
    ),
    Service(
        "prefect-worker",
        (),
        lambda s: f"pool {s.prefect_work_pool}",
        prefect_worker_command,
        ready.worker_ready,
        env=prefect_env,
        prepare=prepare_worker,
        after=("prefect",),
        stop_signal=signal.SIGINT,  # the worker stops promptly on SIGINT
    ),
    Service(
        "consumer",
        ("consumer_metrics_port",),
        lambda s: f"http://{s.host}:{s.consumer_metrics_port}/metrics",
        _py("-m", "training.consumer"),
        ready.metrics_ready("consumer_metrics_port", "consumer_messages_consumed_total"),
        env=prefect_env,
        after=("kafka", "prefect"),
    ),
    Service(
        "prefect-exporter",
        ("prefect_exporter_port",),
        lambda s: f"http://{s.host}:{s.prefect_exporter_port}/metrics",
        _py("-m", "training.prefect_exporter"),
        ready.metrics_ready("prefect_exporter_port", "prefect_flow_runs"),
        env=prefect_env,
        after=("prefect",),
    ),
    Service(
        "prometheus",
        ("prometheus_port",),
        lambda s: s.prometheus_url or "",
        lambda s: [
            "prometheus",
            "--config.file",
            str(s.run_dir / "prometheus" / "prometheus.yml"),
            "--storage.tsdb.path",
            str(s.run_dir / "prometheus" / "data"),
            "--web.listen-address",
            f"{s.host}:{s.prometheus_port}",
        ],
        ready.prometheus_ready,
        prepare=prepare_prometheus,
    ),
)
BY_NAME = {svc.name: svc for svc in SERVICES}


def available(svc: Service) -> bool:
    """Whether the code a service runs exists in this checkout (lets later issues add services)."""
    module = {
        "gateway": "serving/app.py",
        "sync": "serving/sync.py",
        "ui": "ui/app.py",
        "consumer": "training/consumer/__main__.py",
        "prefect-exporter": "training/prefect_exporter.py",
        "prometheus": "monitoring/prometheus.yml",
    }.get(svc.name)
    return module is None or (ROOT / module).exists()
